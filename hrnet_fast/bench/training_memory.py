"""What a training step keeps and costs, variant by variant:
`hrnet-fast memory` (also `python -m hrnet_fast memory`).

For each variant of one model -- eager, fused (convert), lean
(convert(memory="lean")), checkpoint (convert(memory="checkpoint")) and
compile (torch.compile of the unconverted model) -- from identical weights:

- saved MiB: the distinct storages autograd saves for backward during one
  training forward (torch.autograd.graph.saved_tensors_hooks; the same
  figure on any device), and of those the activations (without the
  parameters every variant saves alike);
- peak MiB: the most memory a whole step (forward, loss, backward, SGD
  step) allocates beyond what existed before it: the running sum of
  torch.profiler's allocation events on the CPU,
  torch.cuda.max_memory_allocated on a GPU;
- step ms: the median of paired rounds (every variant once per round, in
  rotating order: hrnet_fast.bench.timing);
- the largest batch that fits `--budget-mib`: the peak measured at batch 1
  and 2 extrapolated linearly (peak = fixed + per-image * batch);
- grad error: the gradients' largest difference from eager's in float64,
  relative to its largest (so a variant cannot be fast by being wrong;
  eager's own row says how exact the model's dtype allows).

    hrnet-fast memory --model hrnet_w18 --size 256x512 --batch 2
    hrnet-fast memory --model w32-pose --size 256x192 --batch 8 --rounds 3 --plot memory.png

Models: a timm HRNet name (its features_only backbone, all four branches),
ARCH-seg / ARCH-pose for this package's models, or package.module:factory.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import timing
from .models import randomize_batchnorm, user_factory
from .runner import device_name, loss_of

VARIANTS = ("eager", "fused", "lean", "checkpoint", "compile")


@dataclass
class Row:
    variant: str
    saved_mib: Optional[float] = None
    activations_mib: Optional[float] = None
    peak_mib: Optional[float] = None
    step_ms: Optional[float] = None
    step_ratio: Optional[float] = None
    max_batch: Optional[int] = None
    grad_error: Optional[float] = None
    error: Optional[str] = None
    peaks: Dict[int, float] = field(default_factory=dict)


def build(name: str) -> nn.Module:
    """The model `name` names (see the module doc), BatchNorms randomised."""
    if ":" in name:
        model = user_factory(name)()
    elif name.startswith("hrnet"):
        import timm

        model = timm.create_model(name, pretrained=False, features_only=True)
    else:
        arch, _, head = name.rpartition("-")
        from .. import models

        model = models.create(arch, head)
    randomize_batchnorm(model)
    return model


def saved_mib(model: nn.Module, x: Tensor) -> Tuple[float, float]:
    """(all, activations only) MiB of the distinct storages saved for the
    backward of one forward of `model` on `x`."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: Dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    total = sum(seen.values())
    acts = sum(n for ptr, n in seen.items() if ptr not in params)
    return total / 2 ** 20, acts / 2 ** 20


def peak_mib(step: Callable[[], Any], device: str) -> float:
    """The most memory one call of `step` allocates beyond what existed
    before it (see the module doc)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    # The allocation events of the profiler's event tree, in time order
    # (what prof._memory_profile() reads too, without the stacks and shapes
    # it needs, which cost gigabytes on a compiled model's step).
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    sizes: List[Tuple[int, int]] = []
    todo = list(prof.profiler.kineto_results.experimental_event_tree())
    while todo:
        e = todo.pop()
        if e.tag == _EventType.Allocation:
            sizes.append((e.start_time_ns, e.extra_fields.alloc_size))
        todo.extend(e.children)
    current = peak = 0
    for _, size in sorted(sizes):
        current += size
        peak = max(peak, current)
    return peak / 2 ** 20


class Autocast(nn.Module):
    """`model` run under torch.autocast(device, dtype): its parameters, its
    state_dict under `model.`."""

    def __init__(self, model: nn.Module, device: str, dtype: torch.dtype):
        super().__init__()
        self.model, self.device, self.dtype = model, device, dtype

    def forward(self, x: Tensor) -> Any:
        with torch.autocast(self.device, dtype=self.dtype):
            return self.model(x)


def _variant(name: str, base: nn.Module, autocast: Optional[torch.dtype] = None) -> nn.Module:
    import hrnet_fast

    model = copy.deepcopy(base)
    if name == "compile":
        model = torch.compile(model)
    elif name != "eager":
        model = hrnet_fast.convert(model, memory={"fused": None, "lean": "lean", "checkpoint": "checkpoint"}[name])
    device = next(base.parameters()).device.type
    return model if autocast is None else Autocast(model, device, autocast)


def _step(model: nn.Module, x: Tensor) -> Callable[[], Any]:
    # lr 0: the step does its memory work and leaves the weights as they were,
    # so every variant's gradients stay comparable with eager's
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def step():
        loss_of(model(x)).backward()
        opt.step()
        # freed here, not at the next step's start: every step then begins
        # without gradients and its peak counts them (a freed block that
        # was allocated before the profiler started has no size in it)
        opt.zero_grad(set_to_none=True)
    return step


def _grads(model: nn.Module, x: Tensor) -> Tensor:
    """Every parameter's gradient of one step, flattened, in float64."""
    model.zero_grad(set_to_none=True)
    loss_of(model(x)).backward()
    out = torch.cat([p.grad.flatten().double() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return out


def _grad_error(model: nn.Module, truth: Tensor, x: Tensor) -> float:
    """The largest difference of `model`'s gradients from `truth` (eager's
    in float64), relative to truth's largest."""
    return float((_grads(model, x) - truth).abs().max() / truth.abs().max())


def run(model: str, size: Tuple[int, int], batch: int, variants: Sequence[str] = VARIANTS, rounds: int = 3,
        device: str = "cpu", budget_mib: Optional[float] = None, log: Callable[[str], None] = print,
        autocast: Optional[torch.dtype] = None, channels_last: bool = False) -> Dict[str, Any]:
    """Measure every variant (module doc); the report as a JSON-ready dict."""
    torch.manual_seed(0)
    base = build(model).to(device)
    base.train()  # mmcv-era train() overrides return None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    base.to(memory_format=fmt)
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=fmt)
    rows: Dict[str, Row] = {}
    steps: Dict[str, Callable[[], Any]] = {}
    # float32 gradients of a deep network with batch statistics are only
    # so exact (eager's own differ from float64 by 1-2e-2 of the largest on
    # hrnet_w18 and W48 at these sizes), so every variant, eager included,
    # is measured against eager in float64.
    truth = _grads(copy.deepcopy(base).double(), x.double())
    for name in variants:
        row = rows[name] = Row(name)
        try:
            m = _variant(name, base, autocast)
            m.train()
            t0 = time.perf_counter()
            step = _step(m, x)
            step()  # compiles, for compile
            log(f"{name}: first step {time.perf_counter() - t0:.1f} s")
            row.saved_mib, row.activations_mib = saved_mib(m, x)
            for b in (1, 2):
                xb = x if b == batch else torch.randn(b, 3, *size, device=device).contiguous(memory_format=fmt)
                row.peaks[b] = peak_mib(_step(m, xb), device)
            row.peak_mib = row.peaks[batch] if batch in row.peaks else peak_mib(step, device)
            row.grad_error = _grad_error(m, truth, x)
            log(f"{name}: saved {row.saved_mib:.1f} MiB ({row.activations_mib:.1f} activations), peak "
                f"{row.peak_mib:.1f} MiB (batch 1: {row.peaks[1]:.1f}, 2: {row.peaks[2]:.1f}), grad error "
                f"{row.grad_error:.1e}")
            steps[name] = step
        except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, the others go on
            row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            log(f"{name}: {row.error}")
    if steps:
        ms = timing.paired_rounds(steps, rounds, device)
        for name, times in ms.items():
            rows[name].step_ms = statistics.median(times)
        if "eager" in ms:
            for name, times in ms.items():
                rows[name].step_ratio = statistics.median(a / b for a, b in zip(times, ms["eager"]))
    if budget_mib is not None:
        for row in rows.values():
            if 1 in row.peaks and 2 in row.peaks:
                per_image = row.peaks[2] - row.peaks[1]
                fixed = row.peaks[1] - per_image
                if per_image > 0:
                    row.max_batch = max(int((budget_mib - fixed) // per_image), 0)
    return {"model": model, "size": list(size), "batch": batch, "device": device_name(device),
            "dtype": f"float32, {str(autocast).replace('torch.', '')} autocast" if autocast else "float32",
            "channels_last": channels_last, "torch": torch.__version__, "rounds": rounds, "budget_mib": budget_mib,
            "rows": [vars(r) for r in rows.values()]}


def table(report: Dict[str, Any]) -> str:
    """The report as a Markdown table."""
    rows = report["rows"]
    eager = next((r for r in rows if r["variant"] == "eager"), None)
    lines = [f"{report['model']} {report['batch']}x3x{report['size'][0]}x{report['size'][1]}, "
             f"{report['device']}, {report.get('dtype', 'float32')}"
             f"{', channels_last' if report.get('channels_last') else ''}, torch {report['torch']}, "
             f"{report['rounds']} paired rounds",
             "",
             "| variant | saved MiB | x eager | activations MiB | peak MiB | x eager | step ms | x eager | "
             f"max batch in {report['budget_mib']} MiB | grad error |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def ratio(r, key):
        return f"{r[key] / eager[key]:.2f}" if eager and r[key] is not None and eager[key] else "-"

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    for r in rows:
        if r["error"]:
            lines.append(f"| {r['variant']} | {r['error']} |")
            continue
        lines.append(f"| {r['variant']} | {num(r['saved_mib'], '.1f')} | {ratio(r, 'saved_mib')} | "
                     f"{num(r['activations_mib'], '.1f')} | {num(r['peak_mib'], '.1f')} | {ratio(r, 'peak_mib')} | "
                     f"{num(r['step_ms'], '.0f')} | {num(r['step_ratio'], '.2f')} | {num(r['max_batch'], 'd')} | "
                     f"{num(r['grad_error'], '.1e')} |")
    return "\n".join(lines)


def plot(report: Dict[str, Any], path: str) -> None:
    """Saved, peak and step time per variant against eager, in one chart."""
    from .plotting import check_path

    fmt = check_path(path)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if not r["error"]]
    eager = next(r for r in rows if r["variant"] == "eager")
    keys = [("saved_mib", "saved for backward"), ("peak_mib", "step peak"), ("step_ms", "step time")]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rows), 3.6))
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        values = [r[key] / eager[key] if r[key] is not None and eager[key] else 0 for r in rows]
        ax.bar([i + k * width for i in range(len(rows))], values, width, label=label)
    ax.set_xticks([i + width for i in range(len(rows))], [r["variant"] for r in rows])
    ax.axhline(1.0, color="black", linewidth=0.6)
    ax.set_ylabel("x eager")
    ax.set_title(f"{report['model']} {report['batch']}x3x{report['size'][0]}x{report['size'][1]}, "
                 f"{report['device']}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format=fmt)
    plt.close(fig)
