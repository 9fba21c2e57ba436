"""Measure the memory copy bandwidth (hrnet_fast.bench.bandwidth): the ceiling
a memory-bound kernel is compared against.

    python benchmarks/bandwidth.py                     # CUDA when available: 2 GiB device-to-device copy
    python benchmarks/bandwidth.py --device cpu --gib 0.25 --json bw.json

Bandwidth counts the bytes read plus the bytes written (2 x size per copy),
the same convention as the microbenchmarks' GB/s. CUDA: CUDA events around
each copy, median of --reps after --warmup copies. CPU: host clock.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import torch

from hrnet_fast.bench.bandwidth import copy_bandwidth


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--gib", type=float, default=None, help="buffer size (default 2 on CUDA, 0.25 on CPU)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("bandwidth.py: no CUDA device", file=sys.stderr)
        return 1
    gib = args.gib if args.gib is not None else (2.0 if device == "cuda" else 0.25)
    res = copy_bandwidth(device, gib, args.reps)
    print(f"{res['device_name']}: copy of {gib:g} GiB in {res['median_ms']:.3f} ms (median of {args.reps}) = "
          f"{res['gbps_read_plus_write']:.0f} GB/s read+write (best {res['best_gbps_read_plus_write']:.0f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
