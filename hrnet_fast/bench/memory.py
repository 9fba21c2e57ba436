"""Peak memory of one call.

CUDA: the caching allocator's peak (`torch.cuda.max_memory_allocated`)
during the call, minus what was allocated before it: the activations and
workspaces the call needs, without the weights every variant holds anyway.

CPU: the growth of the process's peak resident set size during the call.
On Linux the kernel's peak (VmHWM) is reset first by writing 5 to
/proc/self/clear_refs, and glibc is asked to return freed heap pages
(malloc_trim) so the baseline is not inflated by earlier calls; where that
is not possible, the growth of `resource.getrusage().ru_maxrss` is used,
which only sees new lifetime peaks (it reads 0 once an earlier call went
higher). RSS counts pages, not tensors: treat it as indicative.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any, Callable, Optional, Tuple

import torch

METHOD_CUDA = "cuda_max_allocated"
METHOD_HWM = "cpu_peak_rss_growth(VmHWM)"
METHOD_RUSAGE = "cpu_peak_rss_growth(ru_maxrss)"


def _read_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def settle_allocator() -> None:
    """Put glibc malloc in the state a long-running process reaches, so CPU
    timings do not depend on the order of the process's first frees.

    glibc serves allocations above its mmap threshold (128 KiB at start) with
    fresh mappings, so every such temporary pays page faults, and it raises
    the threshold to the size of the first mmapped chunk freed (up to
    32 MiB). Which chunk that is varies between runs; at HRNet-W32 shapes it
    moved the eager exchange from 3.5 ms to 24 ms. Freeing one chunk just
    under the cap first makes every run start from the same warmed-up state.
    Harmless elsewhere: one allocation and one free.
    """
    buffer = torch.empty(30 << 20, dtype=torch.uint8)
    del buffer


def peak_memory_mb(fn: Callable[[], Any], device: str) -> Tuple[Optional[float], str]:
    """Run `fn` once; return (peak memory in MiB it needed, method name).
    The value is None when nothing could be measured."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del out
        return (peak - before) / 2**20, METHOD_CUDA
    _malloc_trim()
    if _read_status_kb("VmHWM") is not None and _reset_hwm():
        before = _read_status_kb("VmRSS")
        out = fn()
        peak = _read_status_kb("VmHWM")
        del out
        if before is None or peak is None:
            return None, METHOD_HWM
        return max(peak - before, 0) / 1024, METHOD_HWM
    try:
        import resource
    except ImportError:
        fn()
        return None, METHOD_RUSAGE
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del out
    return max(after - before, 0) / 1024, METHOD_RUSAGE
