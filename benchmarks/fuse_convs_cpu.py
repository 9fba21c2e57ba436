"""CPU benchmark of the exchange's own convolutions at HRNet-W32 stage-4
shapes (256x192 input): what the converted model runs instead of eager's.

    .venv/bin/python benchmarks/fuse_convs_cpu.py [--iters 200]

- the six 1x1 UP convs: F.conv2d (oneDNN) against hrnet_fast.pointwise.conv1x1
  (a GEMM), NCHW and channels_last, eval at batch 1/4/8 and forward +
  backward at batch 4;
- the first convs that read the same branch: one call each against one
  merged call with stacked weights (the eval program's merge option,
  hrnet_fast.plan.compiler), batch 1 and 4.

Each round runs both sides back to back, order alternating
(hrnet_fast.bench.timing.paired_rounds); figures are medians of the per-call
times (us) and of the per-round ratios.
"""
from __future__ import annotations

import argparse
from typing import Callable, Tuple

import torch
import torch.nn.functional as F

from hrnet_fast.bench import timing
from hrnet_fast.pointwise import conv1x1

CHANNELS = (32, 64, 128, 256)
SIZES = ((64, 48), (32, 24), (16, 12), (8, 6))


def paired(a: Callable[[], object], b: Callable[[], object], iters: int) -> Tuple[float, float, float]:
    """(median us of a, median us of b, median of per-pair ratios a / b)."""
    r = timing.paired(a, b, iters, warmup=5)
    return r.a_ms * 1e3, r.b_ms * 1e3, r.ratio


def up_convs(batch: int, fmt: torch.memory_format, grad: bool):
    """The six (x_j, weight, bias) of stage 4's 1x1 UP convs (j > i)."""
    terms = []
    for i in range(4):
        for j in range(i + 1, 4):
            x = torch.randn(batch, CHANNELS[j], *SIZES[j]).contiguous(memory_format=fmt).requires_grad_(grad)
            w = torch.randn(CHANNELS[i], CHANNELS[j], 1, 1, requires_grad=grad)
            b = torch.randn(CHANNELS[i], requires_grad=grad)
            terms.append((x, w, b))
    return terms


def bench_up(iters: int) -> None:
    print("| 1x1 UP convs (six) | F.conv2d us | conv1x1 us | speedup |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for fmt_name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
            for batch in (1, 4, 8):
                terms = up_convs(batch, fmt, grad=False)
                ta, tb, r = paired(lambda: [F.conv2d(*t) for t in terms], lambda: [conv1x1(*t) for t in terms],
                                   iters)
                print(f"| eval, batch {batch}, {fmt_name} | {ta:.0f} | {tb:.0f} | {r:.2f}x |")
    terms = up_convs(4, torch.contiguous_format, grad=True)
    grads = [torch.randn(4, CHANNELS[i], *SIZES[j]) for i in range(4) for j in range(i + 1, 4)]

    def train(conv):
        def run():
            for (x, w, b), g in zip(terms, grads):
                torch.autograd.grad(conv(x, w, b), (x, w, b), g)
        return run

    ta, tb, r = paired(train(F.conv2d), train(conv1x1), max(20, iters // 4))
    print(f"| forward + backward, batch 4, NCHW | {ta:.0f} | {tb:.0f} | {r:.2f}x |")


def bench_shared(iters: int) -> None:
    # (source channels, its size, output channels of each first conv, kernel)
    groups = [(32, SIZES[0], (64, 32, 32), 3), (64, SIZES[1], (128, 64), 3),
              (256, SIZES[3], (32, 64, 128), 1), (128, SIZES[2], (32, 64), 1)]
    print()
    print("| first convs of one source | batch | apart us | merged us | speedup |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for batch in (1, 4):
            for c_in, size, outs, k in groups:
                x = torch.randn(batch, c_in, *size)
                ws = [torch.randn(c, c_in, k, k) for c in outs]
                bs = [torch.randn(c) for c in outs]
                w, b = torch.cat(ws), torch.cat(bs)
                if k == 3:
                    apart = lambda: [F.conv2d(x, wi, bi, 2, 1) for wi, bi in zip(ws, bs)]  # noqa: E731
                    merged = lambda: F.conv2d(x, w, b, 2, 1).split(outs, 1)  # noqa: E731
                else:
                    apart = lambda: [conv1x1(x, wi, bi) for wi, bi in zip(ws, bs)]  # noqa: E731
                    merged = lambda: conv1x1(x, w, b).split(outs, 1)  # noqa: E731
                ta, tb, r = paired(apart, merged, iters)
                desc = f"{c_in}ch {size[0]}x{size[1]} -> {'+'.join(map(str, outs))} ({k}x{k})"
                print(f"| {desc} | {batch} | {ta:.0f} | {tb:.0f} | {r:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"# CPU: {torch.get_num_threads()} threads, torch {torch.__version__}, float32")
    bench_up(args.iters)
    bench_shared(args.iters)


if __name__ == "__main__":
    main()
