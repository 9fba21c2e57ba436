"""Paired CPU benchmark: `torch.compile(hrnet_fast.convert(m))` against
`torch.compile(m)` on the same weights, in one process.

    .venv/bin/python benchmarks/compile_converted_cpu.py [--model w48] [--head seg] \
        [--size 256x512] [--batch 1] [--rounds 60]

A converted model under torch.compile on the CPU hands Inductor the
exchange's plain definition (backend "auto"), so the compiler can fuse it
with its neighbours as it does in the unconverted model; this measures that
the conversion costs nothing there. Both models are compiled (mode
"default") and warmed up, then called in `--rounds` paired rounds in
alternating order (hrnet_fast.bench.timing.paired). Reported: each median,
the median of the per-round ratios compile(m) / compile(convert(m)) (above
1: the converted one is faster) with its distribution-free 95 % interval,
and the outputs' agreement.
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import torch

import hrnet_fast
from hrnet_fast.bench import timing
from hrnet_fast.bench.config import Case, parse_size
from hrnet_fast.bench.models import build_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="w48")
    p.add_argument("--head", default="seg")
    p.add_argument("--size", default="256x512")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=60)
    args = p.parse_args(argv)
    h, w = parse_size(args.size)
    case = Case(model=args.model, head=args.head, size=(h, w), batch=args.batch, device="cpu")
    base = build_model(case).eval()
    x = torch.randn(args.batch, 3, h, w)
    plain = torch.compile(copy.deepcopy(base))
    converted = torch.compile(hrnet_fast.convert(copy.deepcopy(base)))
    with torch.no_grad():
        setup = {}
        for name, model in (("compile(m)", plain), ("compile(convert(m))", converted)):
            t0 = time.perf_counter()
            model(x)
            setup[name] = time.perf_counter() - t0
        ya, yb = plain(x), converted(x)
        err = ((ya - yb).norm() / ya.norm()).item()
        r = timing.paired(lambda: plain(x), lambda: converted(x), args.rounds, warmup=3)
    load = os.getloadavg()[0]
    print(f"# {args.model} {args.head} {args.batch}x3x{h}x{w} float32 eval on cpu, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, load {load:.2f}")
    for name, s in setup.items():
        print(f"  {name:>20}: first call (compile) {s:6.1f} s")
    print(f"  compile(m) {r.a_ms:.2f} ms, compile(convert(m)) {r.b_ms:.2f} ms (medians of {args.rounds} paired rounds)")
    print(f"  compile(m) / compile(convert(m)): {r.ratio:.3f}x (95 % CI {r.interval[0]:.3f}-{r.interval[1]:.3f}); "
          f"outputs differ by {err:.1e} (relative norm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
