"""Measure the memory copy bandwidth: the ceiling a memory-bound kernel is
compared against.

    python benchmarks/bandwidth.py                     # CUDA when available: 2 GiB device-to-device copy
    python benchmarks/bandwidth.py --device cpu --gib 0.25 --json bw.json

Bandwidth counts the bytes read plus the bytes written (2 x size per copy),
the same convention as the microbenchmarks' GB/s. CUDA: CUDA events around
each copy, median of --reps after --warmup copies. CPU: host clock.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch


def copy_bandwidth(device: str, gib: float = 2.0, reps: int = 20, warmup: int = 3) -> Dict[str, object]:
    """Time `dst.copy_(src)` for a `gib` GiB buffer; return the figures."""
    nbytes = int(gib * 2**30)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    times_ms: List[float] = []
    for i in range(warmup + reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            ms = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            times_ms.append(ms)
    med = statistics.median(times_ms)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"device": device, "device_name": name, "bytes_per_copy": nbytes, "reps": reps,
            "median_ms": med, "best_ms": min(times_ms),
            "gbps_read_plus_write": 2 * nbytes / (med * 1e-3) / 1e9,
            "best_gbps_read_plus_write": 2 * nbytes / (min(times_ms) * 1e-3) / 1e9}


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
