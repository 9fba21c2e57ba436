"""What keeping NaN costs `hrnet_fast.optimize` on the CPU (issue 24.1): the
optimized model as it runs (oneDNN convolution with the bias and the
residual add as post-ops, then torch's relu_, which keeps NaN) against the
same model with the ReLU back in oneDNN's post-op (`library_relu`, which
maps NaN to 0), and eager for scale, in paired rounds in one process.

    PYTHONPATH=. .venv/bin/python benchmarks/optimize_nan.py \
        [--model hrnet_w18_small_v2] [--size 256x192] [--batch 1] [--rounds 60] [--threads 2]

Reported: each variant's median and p10-p90 per call, and the ratio of the
NaN-keeping model's time to the post-op one's as the median of per-round
ratios with a distribution-free 95 % interval. Both are checked against
eager on a clean input, and on one NaN pixel (eager's NaN count, kept or
lost).
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch

import hrnet_fast
from hrnet_fast.bench.config import Case, parse_size
from hrnet_fast.bench.models import build_model, make_input
from hrnet_fast.bench.timing import median_interval, paired_rounds, percentile
from hrnet_fast.optimize.convs import fused_convs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hrnet_w18_small_v2")
    ap.add_argument("--size", default="256x192")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    case = Case(model=args.model, head=None, size=parse_size(args.size), batch=args.batch, device="cpu")
    model = build_model(case).eval()
    x = make_input(case)
    keep = hrnet_fast.optimize(model, x)
    post_op = hrnet_fast.optimize(model, x)
    relu_convs = [c for c in fused_convs(post_op) if c.epilogue.relu]
    for c in relu_convs:
        c.library_relu = True
    print(f"# {case.label}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"platform {keep.report.platform}, {len(relu_convs)} convolutions with a ReLU epilogue, "
          f"load {os.getloadavg()[0]:.2f}")
    steps = {"eager": lambda: model(x), "keeps NaN": lambda: keep(x), "ReLU post-op": lambda: post_op(x)}
    poisoned = x.clone()
    poisoned[0, 0, x.shape[2] // 2, x.shape[3] // 2] = float("nan")
    with torch.no_grad():
        want = model(x)
        for name, fast in (("keeps NaN", keep), ("ReLU post-op", post_op)):
            err = ((fast(x) - want).abs().max() / want.abs().max()).item()
            print(f"{name:>13}: max|diff|/max|eager| {err:.1e}; NaN outputs for one NaN pixel: "
                  f"{int(fast(poisoned).isnan().sum())} (eager {int(model(poisoned).isnan().sum())})")
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        samples = paired_rounds(steps, args.rounds, "cpu")
    print(f"\n{args.rounds} paired rounds (load after: {os.getloadavg()[0]:.2f})")
    for name, t in samples.items():
        print(f"{name:>13} {statistics.median(t):8.2f} ms  (p10-p90 {percentile(t, 10):.2f}-{percentile(t, 90):.2f})")
    ratios = [a / b for a, b in zip(samples["keeps NaN"], samples["ReLU post-op"])]
    lo, hi = median_interval(ratios)
    print(f"keeps NaN / ReLU post-op: {statistics.median(ratios):.3f}x (95 % CI {lo:.3f}-{hi:.3f})")


if __name__ == "__main__":
    main()
