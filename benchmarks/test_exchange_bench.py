"""Forward and backward of hrnet_fast.exchange per backend, against the eager
reference, at real HRNet shapes (hrnet_fast.bench.shapes).

Each benchmark reports in extra_info the bytes the op must move and the
achieved GB/s. On CUDA the timed function synchronises, so pytest-benchmark's
host-clock figures include launch overhead; the GB/s come from a device-side
median (triton.testing.do_bench: CUDA events, L2 flushed between calls),
reported as device_ms; forwards are also replayed from a CUDA graph
(graph_ms, graph_gbps): the kernels' own time without launch costs. On the
CPU they come from pytest-benchmark's median.
"""
from __future__ import annotations

import functools
import json
import math
from typing import Callable, List, Optional, Tuple

import pytest
import torch
from torch import Tensor

import hrnet_fast
from hrnet_fast.bench.shapes import ExchangeCase
from hrnet_fast.bench.timing import cuda_graph_ms


def make_tensors(case: ExchangeCase, device: str, dtype: torch.dtype, channels_last: bool, grad: bool,
                 seed: int = 0) -> Tuple[List[Tensor], List[Optional[Tensor]], List[Optional[Tensor]]]:
    """Inputs and per-channel affines (None for the first, identity input)."""
    gen = torch.Generator(device=device).manual_seed(seed)  # drawn where they live: no host copies
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    inputs = []
    for h, w in case.in_hws:
        x = torch.randn(case.batch, case.channels, h, w, generator=gen, device=device, dtype=dtype)
        inputs.append(x.contiguous(memory_format=fmt).requires_grad_(grad))
    scales: List[Optional[Tensor]] = [None]
    shifts: List[Optional[Tensor]] = [None]
    for _ in case.in_hws[1:]:
        scales.append((0.5 + torch.rand(case.channels, generator=gen, device=device)).requires_grad_(grad))
        shifts.append((0.1 * torch.randn(case.channels, generator=gen, device=device)).requires_grad_(grad))
    return inputs, scales, shifts


def make_op(case: ExchangeCase, backend: str) -> Callable:
    """exchange(inputs, scales, shifts) on `backend`; "compile" is
    torch.compile of the reference."""
    if backend == "compile":
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        ref = functools.partial(hrnet_fast.reference.exchange, size=case.out_hw, mode=case.mode)
        return torch.compile(ref, dynamic=False)
    return functools.partial(hrnet_fast.exchange, size=case.out_hw, mode=case.mode, backend=backend)


def _rel_err(a: List[Tensor], b: List[Tensor]) -> float:
    fa = torch.cat([t.detach().double().reshape(-1) for t in a])
    fb = torch.cat([t.detach().double().reshape(-1) for t in b])
    den = torch.linalg.vector_norm(fb).item()
    return torch.linalg.vector_norm(fa - fb).item() / (den or 1.0)


def _device_ms(fn: Callable[[], object]) -> Optional[float]:
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))


def test_exchange(benchmark, bench_env, xcase: ExchangeCase, backend: str, direction: str) -> None:
    env = bench_env
    if backend != "compile" and not hrnet_fast.backends()[backend]:
        pytest.skip(f"backend {backend!r} is unavailable here")
    grad = direction == "backward"
    inputs, scales, shifts = make_tensors(xcase, env.device, env.dtype, env.channels_last, grad)
    op = make_op(xcase, backend)
    try:
        y = op(inputs, scales, shifts)
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        if backend == "compile":
            raise
        pytest.skip(f"backend {backend!r} cannot run this case: {str(exc).splitlines()[0][:200]}")
    ref_y = hrnet_fast.exchange(inputs, scales, shifts, size=xcase.out_hw, mode=xcase.mode, backend="reference")
    sync = torch.cuda.synchronize if env.device == "cuda" else (lambda: None)
    elem = torch.empty((), dtype=env.dtype).element_size()
    if direction == "forward":
        rel_err = _rel_err([y], [ref_y])
        nbytes = xcase.forward_bytes(elem)

        def run() -> None:
            op(inputs, scales, shifts)

    else:
        wrt = inputs + [t for t in scales + shifts if t is not None]
        g = torch.randn_like(y)
        rel_err = _rel_err(list(torch.autograd.grad(y, wrt, g, retain_graph=True)),
                           list(torch.autograd.grad(ref_y, wrt, g, retain_graph=True)))
        nbytes = xcase.backward_bytes(elem)

        def run() -> None:
            torch.autograd.grad(y, wrt, g, retain_graph=True)

    def timed() -> None:
        run()
        sync()

    benchmark.group = f"{xcase.id} {direction}"
    benchmark.pedantic(timed, rounds=env.rounds, warmup_rounds=env.warmup, iterations=1)
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    host_ms = stats.median * 1e3 if stats is not None else None
    device_ms = _device_ms(run) if env.device == "cuda" else host_ms
    # Forward only: autograd runs the backward on its own thread, outside a
    # capture on this one.
    graph_ms = cuda_graph_ms(run) if env.device == "cuda" and direction == "forward" else None
    info = {
        "case": xcase.id, "arch": xcase.arch, "task": xcase.task, "stage": xcase.stage, "branch": xcase.branch,
        "batch": xcase.batch, "channels": xcase.channels, "out_hw": list(xcase.out_hw),
        "in_hws": [list(s) for s in xcase.in_hws], "mode": xcase.mode, "backend": backend, "direction": direction,
        "dtype": str(env.dtype).replace("torch.", ""), "channels_last": env.channels_last, "device": env.device,
        "bytes": nbytes, "host_ms": host_ms, "device_ms": device_ms,
        "gbps": nbytes / (device_ms * 1e-3) / 1e9 if device_ms else None, "rel_err_vs_reference": rel_err,
        "graph_ms": graph_ms, "graph_gbps": nbytes / (graph_ms * 1e-3) / 1e9 if graph_ms else None,
    }
    benchmark.extra_info.update(info)
    if env.log:
        with open(env.log, "a") as f:
            f.write(json.dumps(info) + "\n")
    assert math.isfinite(rel_err), f"{backend} {direction} gave a non-finite result on {xcase.id}"
