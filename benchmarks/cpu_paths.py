"""Paired CPU benchmark of the exchange's specialised CPU paths against the
general loops they specialise (issue 23: a path stays only if it clears
the project's 1.5x rule).

    .venv/bin/python benchmarks/cpu_paths.py [--iters 60]

Needs the measurement switch HRNET_FAST_CPU_PATHS (csrc/cpu/cpu_common.h:
a bitmask of the paths taken, all when unset), which exists only at the
commit that measured them. Each row is one path on one case: a W32 pose
stage-4 output branch (256x192 input) at batch 1 and 8, 1 and 2 threads,
the op called directly (no wrapper, no autograd) with the path on and off
in paired rounds (hrnet_fast.bench.timing.paired): median ms of each and
the median of the per-round ratios (off / on) with its 95 % interval.
"""
from __future__ import annotations

import argparse
import os

import torch

import hrnet_fast  # noqa: F401  loads the extension
from hrnet_fast.bench.shapes import exchange_case
from hrnet_fast.bench.timing import paired

ALL = 15
PATHS = {
    1: ("same-size NCHW forward (with_count)", "nchw", "nearest", [3], "fwd"),
    2: ("same-size NCHW backward (with_count)", "nchw", "nearest", [3], "bwd"),
    4: ("SourceRows (channels_last bilinear)", "cl", "bilinear", [0, 1, 2], "fwd"),
    8: ("tiled scales/shifts (channels_last)", "cl", "nearest", [0, 1, 2, 3], "fwd"),
}


def _call(bit: int, on: bool, fn):
    flags = str(ALL if on else ALL & ~bit)

    def run():
        os.environ["HRNET_FAST_CPU_PATHS"] = flags
        return fn()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--only", type=int, nargs="*", help="path bits to time (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    op, bwd = torch.ops.hrnet_fast.exchange.default, torch.ops.hrnet_fast.exchange_backward.default
    print(f"# torch {torch.__version__}; ratio = path off / path on (> 1: the path is faster)")
    print("| path | branch | layout | mode | batch | threads | on ms | off ms | ratio (95 % CI) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bit, (name, layout, mode, branches, direction) in PATHS.items():
        if args.only and bit not in args.only:
            continue
        fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
        for branch in branches:
            for batch in (1, 8):
                case = exchange_case("w32", "pose", 4, branch, batch=batch)
                c = case.channels
                xs = [torch.randn(batch, c, h, w).contiguous(memory_format=fmt) for h, w in case.in_hws]
                sc = [torch.rand(c) + 0.5 for _ in xs]
                sh = [torch.randn(c) for _ in xs]
                size = [int(v) for v in case.in_hws[0]]
                out = op(xs, sc, sh, size, mode, False, True)
                grad = torch.randn_like(out)
                if direction == "fwd":
                    fn = lambda: op(xs, sc, sh, size, mode, False, True)  # noqa: E731
                else:
                    fn = lambda: bwd(grad, out, xs, sc, mode, False, True)  # noqa: E731
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    r = paired(_call(bit, False, fn), _call(bit, True, fn), args.iters)
                    print(f"| {name} | {branch} | {layout} | {mode} | {batch} | {threads} | {r.b_ms:.3f} | "
                          f"{r.a_ms:.3f} | {r.ratio:.2f}x ({r.interval[0]:.2f}-{r.interval[1]:.2f}) |", flush=True)
    os.environ.pop("HRNET_FAST_CPU_PATHS", None)


if __name__ == "__main__":
    main()
