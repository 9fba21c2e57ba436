"""Real HRNet exchange shapes, for the exchange benchmarks.

Branch k of an HRNet with width C has C*2^k channels at 1/4/2^k of the input
resolution. In a stage with n branches, output branch i sums n terms, all
with C*2^i channels:
  - j == i: the branch itself (same size);
  - j < i:  the output of the finer branch's stride-2 conv chain, which has
            branch i's size: modelled as another same-size input;
  - j > i:  the coarser branch after its 1x1 conv + BN, at branch j's size,
            upsampled (nearest in the pose nets, bilinear in the seg nets).
Every input but the first carries a per-channel affine (its BatchNorm).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

WIDTHS = {"w18": 18, "w32": 32, "w48": 48}
#: task -> (input H, W), batch on the GPU, interpolation mode.
TASKS = {"pose": ((256, 192), 32, "nearest"), "seg": ((512, 1024), 8, "bilinear")}
STAGES = (2, 3, 4)  # stage s has s branches


@dataclass(frozen=True)
class ExchangeCase:
    """The inputs of one output branch of one HRNet stage's exchange."""

    arch: str
    task: str
    stage: int
    branch: int
    batch: int
    channels: int
    out_hw: Tuple[int, int]
    in_hws: Tuple[Tuple[int, int], ...]
    mode: str

    @property
    def id(self) -> str:
        return f"{self.arch}-{self.task}-s{self.stage}-b{self.branch}-n{self.batch}"

    def numels(self) -> List[int]:
        """Elements of each input."""
        return [self.batch * self.channels * h * w for h, w in self.in_hws]

    def out_numel(self) -> int:
        return self.batch * self.channels * self.out_hw[0] * self.out_hw[1]

    def forward_bytes(self, elem: int) -> int:
        """Fewest bytes the forward must move: read every input once, write
        the output once (the (C,) affines are negligible and not counted)."""
        return elem * (sum(self.numels()) + self.out_numel())

    def backward_bytes(self, elem: int) -> int:
        """Fewest bytes the backward must move: read the gradient and the
        saved output (its ReLU mask), read every input (for the scale
        gradients), write every input's gradient."""
        return elem * (2 * self.out_numel() + 2 * sum(self.numels()))


def branch_hw(task: str, k: int) -> Tuple[int, int]:
    """(H, W) of branch k for the task's input size."""
    (h, w), _, _ = TASKS[task]
    f = 4 * 2 ** k
    return h // f, w // f


def exchange_case(arch: str, task: str, stage: int, branch: int, batch: int = 0) -> ExchangeCase:
    """Output branch `branch` of stage `stage` of `arch` on `task` inputs
    (batch 0: the task's GPU batch)."""
    if not 0 <= branch < stage:
        raise ValueError(f"stage {stage} has branches 0..{stage - 1}, not {branch}")
    _, task_batch, mode = TASKS[task]
    out_hw = branch_hw(task, branch)
    in_hws = [out_hw] * (branch + 1) + [branch_hw(task, j) for j in range(branch + 1, stage)]
    return ExchangeCase(arch, task, stage, branch, batch or task_batch, WIDTHS[arch] * 2 ** branch, out_hw,
                        tuple(in_hws), mode)


def full_grid() -> List[ExchangeCase]:
    """W18/W32/W48 x pose/seg x stages 2-4 x every output branch, the cases
    the GPU issues quote (W48 seg stage 4) first."""
    cases = [exchange_case(a, t, s, b) for a in WIDTHS for t in TASKS for s in STAGES for b in range(s)]
    target = [c for c in cases if (c.arch, c.task, c.stage) == ("w48", "seg", 4)]
    return target + [c for c in cases if c not in target]


def small_grid() -> List[ExchangeCase]:
    """A handful of cases that run in seconds on a small CPU: W32 pose
    stage 4 at batch 8 (branches 0, 1, 3) and a bilinear seg case."""
    return [exchange_case("w32", "pose", 4, 0, batch=8), exchange_case("w32", "pose", 4, 1, batch=8),
            exchange_case("w32", "pose", 4, 3, batch=8), exchange_case("w18", "seg", 3, 0, batch=1)]


def is_target(case: ExchangeCase) -> bool:
    """The cases issues 4/5 set targets for (W48 seg stage 4)."""
    return (case.arch, case.task, case.stage) == ("w48", "seg", 4)


def compare_with_compile(case: ExchangeCase) -> bool:
    """Where torch.compile of the reference is timed too: W48 seg stage 4,
    output branch 0 (each compile costs seconds of a short GPU lease)."""
    return is_target(case) and case.branch == 0
