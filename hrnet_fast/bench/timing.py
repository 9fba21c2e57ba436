"""Timing: one call on the right clock, paired rounds across variants, and
percentiles.

On CUDA a call is timed with CUDA events recorded on the current stream
around it, then the device is synchronised, so the next call starts on an
idle device. On the CPU the host clock (time.perf_counter) is used.

Variants are interleaved: every round calls each variant once, in an order
that rotates from round to round, so slow drift (clock boost, other
processes on a shared machine, thermal state) hits all variants alike.
"""
from __future__ import annotations

import math
import statistics
import time
from fractions import Fraction
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch


def synchronize(device: str) -> None:
    """Wait for queued work on `device` (no-op on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: str) -> Tuple[float, Any]:
    """Run `fn` once and return (milliseconds, its result)."""
    if device == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end), out
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def rotation(names: Sequence[str], round_index: int) -> List[str]:
    """`names` rotated left by `round_index` (the call order of a round)."""
    if not names:
        return []
    k = round_index % len(names)
    return list(names[k:]) + list(names[:k])


def paired_rounds(steps: Mapping[str, Callable[[], Any]], rounds: int, device: str,
                  on_call: Optional[Callable[[], None]] = None,
                  into: Optional[Dict[str, List[float]]] = None,
                  deadline: Optional[float] = None, min_rounds: int = 3) -> Dict[str, List[float]]:
    """Call every step once per round, in rotating order, for `rounds`
    rounds; return each step's per-call times in milliseconds (appended to
    `into` when given, so an interrupted run keeps what it measured).
    With `deadline` (a time.perf_counter() value), stop after the first
    complete round past it, once `min_rounds` rounds are done."""
    names = list(steps)
    samples: Dict[str, List[float]] = into if into is not None else {n: [] for n in names}
    for n in names:
        samples.setdefault(n, [])
    for r in range(rounds):
        if deadline is not None and r >= min_rounds and time.perf_counter() > deadline:
            break
        for name in rotation(names, r):
            ms, _ = time_call(steps[name], device)
            samples[name].append(ms)
            if on_call is not None:
                on_call()
    return samples


class Paired(NamedTuple):
    """Two calls timed in paired rounds: median milliseconds of each, the
    median of the per-round ratios a / b and its 95 % interval."""
    a_ms: float
    b_ms: float
    ratio: float
    interval: Tuple[float, float]


def paired(a: Callable[[], Any], b: Callable[[], Any], iters: int, device: str = "cpu", warmup: int = 3) -> Paired:
    """`a` against `b` in `iters` paired rounds (paired_rounds) after
    `warmup` untimed calls of each."""
    for _ in range(warmup):
        a()
        b()
    synchronize(device)
    ms = paired_rounds({"a": a, "b": b}, iters, device)
    ratios = [x / y for x, y in zip(ms["a"], ms["b"]) if y > 0]
    return Paired(statistics.median(ms["a"]), statistics.median(ms["b"]), statistics.median(ratios),
                  median_interval(ratios))


def host_us_per_call(fn: Callable[[], Any], calls: int = 200, device: str = "cuda") -> float:
    """Host time per call in microseconds: `calls` back-to-back calls with
    no synchronisation between them (the device queue absorbs the
    kernels), timed on the host clock, then one synchronisation outside
    the timed region. What the caller's thread pays per call."""
    fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - t0
    synchronize(device)
    return elapsed / calls * 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, linearly interpolated
    between order statistics (numpy's default method)."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median, p10 and p90 of per-call times (ms)."""
    return {"median_ms": float(statistics.median(values)), "p10_ms": float(percentile(values, 10)),
            "p90_ms": float(percentile(values, 90))}


def paired_speedup(base: Sequence[float], other: Sequence[float]) -> float:
    """Median over rounds of base[r] / other[r]: each ratio compares two
    calls made moments apart, so it resists drift better than a ratio of
    medians."""
    ratios = [b / o for b, o in zip(base, other) if o > 0]
    return float(statistics.median(ratios)) if ratios else math.nan


def median_interval(values: Sequence[float], level: float = 0.95) -> Tuple[float, float]:
    """A distribution-free confidence interval for the median of `values`:
    the order statistics (k, n + 1 - k) with the largest k whose binomial
    coverage P(k <= B(n, 1/2) < n + 1 - k) is at least `level`. With too
    few values for that coverage, the range of the values.

    Example:
        >>> median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
        (2.0, 9.0)
    """
    data = sorted(values)
    n = len(data)
    if n == 0:
        raise ValueError("median_interval of no values")
    # In integers (2 ** n overflows a float past n = 1023): counts[i] =
    # 2 ** n * P(B(n, 1/2) <= i), the level as an exact fraction.
    counts = []
    total = 0
    for i in range(n + 1):
        total += math.comb(n, i)
        counts.append(total)
    need = Fraction(level) * 2 ** n
    best = 1
    for k in range(1, n // 2 + 1):
        # P(k <= B <= n - k) = P(B <= n - k) - P(B <= k - 1)
        if counts[n - k] - counts[k - 1] >= need:
            best = k
    return data[best - 1], data[n - best]


def median_difference(ms: Mapping[str, Sequence[float]], a: str, b: str) -> Tuple[float, float, float]:
    """The median of the per-round differences a - b of paired rounds
    (milliseconds in, microseconds out) and its distribution-free 95 %
    interval: steadier than a difference of two medians of times tens of
    times larger."""
    diffs = [(x - y) * 1e3 for x, y in zip(ms[a], ms[b])]
    low, high = median_interval(diffs)
    return statistics.median(diffs), low, high


def rounds_within(budget_s: Optional[float], round_ms: float, wanted: int, minimum: int = 3) -> int:
    """How many rounds of `round_ms` fit in `budget_s` (None: no limit),
    between `minimum` and `wanted`."""
    if budget_s is None or round_ms <= 0:
        return wanted
    return max(min(wanted, int(budget_s * 1e3 / round_ms)), min(minimum, wanted))


def cuda_graph_ms(fn: Callable[[], Any]) -> Optional[float]:
    """Median device time of `fn` replayed from a CUDA graph: no launch or
    Python cost, only its kernels (L2 not flushed between replays). Event
    timing of a plain call includes the host's time whenever the host is
    slower than the kernels, which at tens of microseconds it can be. None
    where capture fails (a synchronising call, a backend that cannot be
    captured)."""
    try:
        from triton.testing import do_bench_cudagraph
        torch.cuda.synchronize()
        with torch.cuda.stream(torch.cuda.Stream()):  # capture needs a side stream
            return float(do_bench_cudagraph(fn, rep=20, return_mode="median"))
    except Exception:  # a failed capture leaves the figure out, not the run
        return None
    finally:
        torch.cuda.synchronize()
