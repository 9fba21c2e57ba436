"""The exchange's backends as data, and the one function that picks one.

    reference  plain PyTorch, the definition
    cpu        C++ (the extension hrnet_fast._C)
    cuda       C++/CUDA (same extension, built with a CUDA toolkit)
    triton     Triton kernels

`choose(name, call)` returns the backend that runs `call`: for "auto" the
first of AUTO_ORDER whose `not_supported_reasons(call)` is empty (reference
takes anything, so there always is one), except under torch.compile on the
CPU, where the definition's plain ops fuse better; for a name, that backend, or an
error listing why it cannot (BackendUnavailable, a RuntimeError, when it
cannot run here at all; BackendUnsupported, a ValueError, when it cannot
take this call).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ..contract import ExchangeCall, check_values
from .base import Backend, BackendUnavailable, BackendUnsupported, describe, lower_convs
from .native import CpuBackend, CudaBackend
from .reference import ReferenceBackend, run_reference
from .triton import TritonBackend

BACKENDS: Dict[str, Backend] = {b.name: b for b in (ReferenceBackend(), CpuBackend(), CudaBackend(),
                                                    TritonBackend())}
NAMES: Tuple[str, ...] = tuple(BACKENDS)

# backend="auto": the first that takes the call. CUDA before Triton: on an
# H200 the CUDA kernels beat Triton in every exchange case measured, and
# cuDNN convs plus the CUDA exchange beat Triton's one-pass conv kernel on
# the converted stage-4 rows (benchmarks/RESULTS.md, "GPU").
AUTO_ORDER: Tuple[str, ...] = ("cuda", "cpu", "triton", "reference")

# Choices by (name, device type, dtype, inputs, conv terms): the reasons
# depend on nothing else, and this runs on every call.
_CHOICES: Dict[tuple, Backend] = {}


def check_name(who: str, name: str) -> None:
    """Raises for a `backend=` argument that is not "auto" or a backend
    name (ValueError), or names one that cannot run here
    (BackendUnavailable): at the call that takes it, not at a first run."""
    if not isinstance(name, str) or (name != "auto" and name not in NAMES):
        raise ValueError(f"{who}: unknown backend {name!r}; expected one of {('auto',) + NAMES}")
    if name != "auto":
        reason = BACKENDS[name].unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"{who}: backend {name!r} is unavailable: {reason}")


def available() -> Dict[str, bool]:
    """Which backends can run on this machine (for some device)."""
    return {name: b.unavailable_reason() is None for name, b in BACKENDS.items()}


def choose(name: str, call: ExchangeCall) -> Backend:
    """The backend that runs `call` when `name` ("auto" or a backend name)
    was asked for."""
    if not call.inputs:
        check_values(call)  # raises: the op needs an input
    x0 = call.inputs[0]
    compiling = torch.compiler.is_compiling()
    if compiling and defers_to_compiler(name, x0.device.type):
        return BACKENDS["reference"]
    key = (name, x0.device.type, x0.dtype, len(call.inputs), len(call.convs))
    hit = _CHOICES.get(key)
    if hit is not None:
        return hit
    if name == "auto":
        chosen = next(BACKENDS[n] for n in AUTO_ORDER if not BACKENDS[n].not_supported_reasons(call))
    else:
        chosen = BACKENDS.get(name)
        if chosen is None:
            raise ValueError(f"hrnet_fast.exchange: unknown backend {name!r}; expected one of "
                             f"{('auto',) + NAMES}")
        reasons = chosen.not_supported_reasons(call)
        if reasons:
            check_values(call)  # a bad call gets its own error, the same on every backend
            unavailable = chosen.unavailable_reason()
            error = BackendUnavailable if unavailable is not None else BackendUnsupported
            what = "is unavailable" if unavailable is not None else "cannot take this call"
            raise error(f"hrnet_fast.exchange: backend {name!r} {what}: " + "; ".join(reasons))
    if not compiling:
        _CHOICES[key] = chosen
    return chosen


def defers_to_compiler(name: str, device_type: str) -> bool:
    """Whether `name` on `device_type` hands torch.compile the definition's
    plain ops instead of a kernel, when compiling: "auto" on the CPU, where
    Inductor fuses the exchange with its neighbours, which the opaque op
    stops (benchmarks/RESULTS.md: torch.compile of a converted model)."""
    return name == "auto" and device_type == "cpu"


def for_device(name: str, device_type: str) -> Backend:
    """The backend `name` resolves to for tensors of `device_type` when
    nothing else about the call matters (what a converted model needs to
    know before building its calls)."""
    if name != "auto":
        return BACKENDS.get(name, BACKENDS["reference"])
    for n in AUTO_ORDER:
        b = BACKENDS[n]
        if b.unavailable_reason() is None and (device_type in b.supported_devices() or n == "reference"):
            return b
    return BACKENDS["reference"]


_IN_KERNEL: Dict[Tuple[str, str], bool] = {}


def conv_terms_in_kernel(name: str, device_type: str) -> bool:
    """Whether the backend `name` resolves to on `device_type` computes
    conv terms itself (so a converted model hands them over) rather than as
    library convolutions (so the model runs them, merged where it can)."""
    hit = _IN_KERNEL.get((name, device_type))
    if hit is None:
        hit = for_device(name, device_type).conv_terms == "kernel"
        if not torch.compiler.is_compiling():
            _IN_KERNEL[(name, device_type)] = hit
    return hit


def table() -> List[Tuple[str, str, str, str]]:
    """(backend, runs on, limits, notes) for every backend: the README's
    table is tested against this."""
    return [describe(b) for b in BACKENDS.values()]


__all__ = ["AUTO_ORDER", "BACKENDS", "Backend", "BackendUnavailable", "BackendUnsupported", "NAMES", "available",
           "check_name", "choose", "conv_terms_in_kernel", "defers_to_compiler", "for_device", "lower_convs", "run_reference", "table"]
