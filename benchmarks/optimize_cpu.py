"""Paired CPU benchmark of `hrnet_fast.optimize` against eager, the stock
BN folding (torch.fx.experimental.optimization.fuse), `hrnet_fast.convert`
and `torch.compile` (default mode) on one model, in one process.

    PYTHONPATH=. .venv/bin/python benchmarks/optimize_cpu.py \
        [--model hrnet_w18_small_v2] [--size 256x192] [--batch 1] [--rounds 30] \
        [--variants eager,fx,fused,optimized,compile] [--threads N] [--warm-compile-cache]

For each variant: the setup time (building it plus its first call: fold and
prepack for optimize, the compile for torch.compile, cold: Inductor's caches
go to a fresh directory unless --warm-compile-cache), then `--rounds` rounds
that call every variant once in rotating order (hrnet_fast.bench.timing).
Reported: each variant's median and p10-p90 per call, and each variant's
speedup over eager and over compile as the median of per-round ratios with
a distribution-free 95 % interval of that median. Every variant's output is
checked against eager's (max |diff| / max |eager|).

The model has random weights and random BatchNorm statistics
(hrnet_fast.bench.models.build_model), so folding is real work.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import torch
from torch import nn

import hrnet_fast
from hrnet_fast.bench.config import Case, parse_size
from hrnet_fast.bench.models import build_model, make_input
from hrnet_fast.bench.runner import flat_output
from hrnet_fast.bench.timing import median_interval, paired_rounds, paired_speedup, percentile


def _prepare(name: str, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    if name == "eager":
        return lambda: model(x)
    if name == "fx":
        from torch.fx.experimental.optimization import fuse
        fused = fuse(copy.deepcopy(model))
        return lambda: fused(x)
    if name == "fused":
        converted = hrnet_fast.convert(copy.deepcopy(model))
        return lambda: converted(x)
    if name == "optimized":
        optimized = hrnet_fast.optimize(model)
        return lambda: optimized(x)
    if name == "compile":
        compiled = torch.compile(copy.deepcopy(model))
        return lambda: compiled(x)
    raise ValueError(f"unknown variant {name!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hrnet_w18_small_v2")
    ap.add_argument("--head", default=None, help="seg or pose, for hrnet_fast's own architectures")
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variants", default="eager,fx,fused,optimized,compile")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--warm-compile-cache", action="store_true",
                    help="keep torch.compile's on-disk caches (default: a fresh cache directory, so the compile "
                         "time is the cold one a new deployment pays)")
    args = ap.parse_args()
    if not args.warm_compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="optimize_cpu_inductor_")
    if args.threads:
        torch.set_num_threads(args.threads)

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "eager" not in names:
        names.insert(0, "eager")
    case = Case(model=args.model, head=args.head, size=parse_size(args.size), batch=args.batch, device="cpu")
    model = build_model(case).eval()
    x = make_input(case)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {case.label}; torch {torch.__version__}, {torch.get_num_threads()} threads, load {load:.2f}")

    steps: Dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        want = flat_output(model(x))
        for name in names:
            start = time.perf_counter()
            step = _prepare(name, model, x)
            out = step()
            setup = time.perf_counter() - start
            err = ((flat_output(out) - want).abs().max() / want.abs().max()).item()
            print(f"{name:>10}: setup + first call {setup:7.2f} s, max|diff|/max|eager| {err:.1e}")
            steps[name] = step
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        samples = paired_rounds(steps, args.rounds, "cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print(f"\n{args.rounds} paired rounds (load after: {load:.2f})")
    print(f"{'variant':>10} {'median ms':>10} {'p10-p90 ms':>16} {'vs eager (95% CI)':>24} {'vs compile (95% CI)':>24}")
    for name in names:
        t = samples[name]
        row = f"{name:>10} {statistics.median(t):10.1f} {percentile(t, 10):7.1f}-{percentile(t, 90):<8.1f}"
        for base in ("eager", "compile"):
            if base not in samples or base == name:
                row += f" {'':>24}"
                continue
            ratios: List[float] = [b / o for b, o in zip(samples[base], t)]
            lo, hi = median_interval(ratios)
            row += f" {paired_speedup(samples[base], t):8.3f}x ({lo:.3f}-{hi:.3f})"
        print(row)


if __name__ == "__main__":
    main()
