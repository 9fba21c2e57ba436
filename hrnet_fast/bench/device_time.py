"""The device's side of a call: kernel time and launches from the profiler.

For calls of tens of microseconds, wall time and event timing measure the
host as much as the device. The device truth is what the GPU ran: the
kernels the profiler (CUPTI) recorded, summed per call, and a CUDA-graph
replay (timing.cuda_graph_ms), which has no launch gaps. The host truth is
timing.host_us_per_call. `measure` gives all three side by side.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from . import timing


def kernel_profile(fn: Callable[[], Any], calls: int = 20, warmup: int = 3) -> Dict[str, float]:
    """{"kernel_us": device time of the kernels (and memsets / copies) per
    call, "kernels": how many per call} over `calls` profiled calls."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total_us, count = 0.0, 0
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            total_us += evt.time_range.elapsed_us()
            count += 1
    return {"kernel_us": total_us / calls, "kernels": count / calls}


def measure(fn: Callable[[], Any], calls: int = 20, host_calls: int = 200) -> Dict[str, Optional[float]]:
    """Kernel time and launches per call (profiler), CUDA-graph replay time
    and host time per call (back-to-back calls, no synchronisation)."""
    out: Dict[str, Optional[float]] = dict(kernel_profile(fn, calls))
    graph_ms = timing.cuda_graph_ms(fn)
    out["graph_us"] = None if graph_ms is None else graph_ms * 1e3
    out["host_us"] = timing.host_us_per_call(fn, host_calls, "cuda")
    return out
