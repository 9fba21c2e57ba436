"""The memory copy bandwidth: the ceiling a memory-bound kernel is compared
against. Bandwidth counts the bytes read plus the bytes written (2 x size
per copy), the same convention as the exchange benchmarks' GB/s. CUDA:
CUDA events around each copy, median of `reps` after `warmup` copies. CPU:
the host clock.
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List

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


def matmul_tflops(device: str = "cuda", dtype: torch.dtype = torch.bfloat16, n: int = 8192, reps: int = 10) -> float:
    """Measured dense matmul rate (TFLOP/s) of an n x n x n product: the
    ceiling a convolution's FLOPs are compared against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times_ms: List[float] = []
    for i in range(reps + 2):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            a @ b
            ms = (time.perf_counter() - t0) * 1e3
        if i >= 2:
            times_ms.append(ms)
    return 2 * n ** 3 / (statistics.median(times_ms) * 1e-3) / 1e12
