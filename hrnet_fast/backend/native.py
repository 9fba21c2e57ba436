"""The C++ backends (the extension hrnet_fast._C): `cpu` and `cuda` run the
registered op hrnet_fast::exchange, which dispatches on the tensors' device
to csrc/cpu or csrc/cuda and checks its own arguments (csrc/checks.cpp).
Autograd is in C++ (csrc/autograd); conv terms run as library convolutions.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .._ext import extension, import_error
from ..contract import ExchangeCall
from .base import Backend, BoundCall, lower_convs

_C = extension()
# Looked up once: each torch.ops attribute step is a Python lookup per call.
_exchange_op = torch.ops.hrnet_fast.exchange.default if _C is not None else None


def _run_op(call: ExchangeCall) -> Tensor:
    if call.convs:
        call = lower_convs(call)
    return _exchange_op(call.inputs, call.scales, call.shifts, call.size, call.mode, call.align_corners, call.relu)


class OpRunner:
    """A bound call of the op without scales or conv terms. What it runs is
    data (shifts, size, mode, align_corners, relu), so an eval program whose
    rows are all OpRunners can run as one C++ call (hrnet_fast.plan.native)."""
    __slots__ = ("shifts", "size", "mode", "align_corners", "relu")

    def __init__(self, call: ExchangeCall):
        self.shifts = call.shifts
        self.size, self.mode, self.align_corners, self.relu = \
            tuple(call.size), call.mode, call.align_corners, call.relu

    def __call__(self, inputs: List[Tensor], convs: Sequence[tuple]) -> Tensor:
        return _exchange_op(inputs, [], self.shifts, self.size, self.mode, self.align_corners, self.relu)


def _bind_op(backend: Backend, call: ExchangeCall) -> BoundCall:
    """Calls without scales or conv terms go straight to the op."""
    if call.convs or call.scales:
        return Backend.bind(backend, call)
    return OpRunner(call)


class CpuBackend(Backend):
    name = "cpu"
    devices = frozenset({"cpu"})
    conv_note = "conv terms as oneDNN convolutions"
    notes = "C++, `at::parallel_for`, vectorised, deterministic backward"

    def unavailable_reason(self) -> Optional[str]:
        if _C is None:
            return f"the C++ extension hrnet_fast._C is not built or failed to load ({import_error()!r})"
        return None

    def run(self, call: ExchangeCall) -> Tensor:
        return _run_op(call)

    def bind(self, call: ExchangeCall) -> BoundCall:
        return _bind_op(self, call)


class CudaBackend(Backend):
    name = "cuda"
    devices = frozenset({"cuda"})
    conv_note = "conv terms as cuDNN convolutions"
    # kMaxLaunchInputs in csrc/cuda/launch.h: one launch's parameter block.
    max_inputs = 8
    notes = "C++/CUDA, compiled when a CUDA toolkit is present"

    def unavailable_reason(self) -> Optional[str]:
        if _C is None:
            return f"the C++ extension hrnet_fast._C is not built or failed to load ({import_error()!r})"
        if not _C.cuda_compiled:
            return "hrnet_fast._C was built without CUDA (no nvcc or a CPU-only torch at build time)"
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        return None

    def run(self, call: ExchangeCall) -> Tensor:
        return _run_op(call)

    def bind(self, call: ExchangeCall) -> BoundCall:
        return _bind_op(self, call)
