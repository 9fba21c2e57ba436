"""The Triton backend: hrnet_fast.triton's ops (imported on first use:
importing triton is slow, and TRITON_INTERPRET must be set before it is).
Conv terms run inside the one-pass implicit-GEMM kernel where it takes
them, else as library convolutions. A call with a forward-mode tangent runs
the definition's ops (the kernels have no jvp)."""
from __future__ import annotations

import importlib.util
import os
from typing import FrozenSet, List, Optional

import torch
from torch import Tensor

from ..contract import ExchangeCall, check_values, has_tangent
from .base import Backend, lower_convs
from .reference import run_reference

# Fixed at import: TRITON_INTERPRET only takes effect if set before triton
# is imported, and constants keep the dispatch traceable by torch.compile.
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# The one-pass conv kernel's slots (hrnet_fast/triton/conv_kernel.py).
MAX_KERNEL_INPUTS = 4
MAX_KERNEL_CONVS = 3


class TritonBackend(Backend):
    name = "triton"
    devices = frozenset({"cuda"})
    conv_terms = "kernel"
    conv_note = (f"conv terms in the one-pass kernel (up to {MAX_KERNEL_INPUTS} inputs, {MAX_KERNEL_CONVS} conv terms, "
                 f"not float64), else library convolutions")
    notes = "Triton kernels (CPU tensors under `TRITON_INTERPRET=1`)"

    def unavailable_reason(self) -> Optional[str]:
        if not HAS_TRITON:
            return "triton is not installed"
        if not INTERPRET and not torch.cuda.is_available():
            return ("no CUDA device is available (set TRITON_INTERPRET=1 before importing triton to run Triton "
                    "kernels on CPU tensors)")
        return None

    def supported_devices(self) -> FrozenSet[str]:
        return self.devices | ({"cpu"} if INTERPRET else set())

    def conv_kernel_reasons(self, call: ExchangeCall) -> List[str]:
        reasons = []
        if len(call.inputs) > MAX_KERNEL_INPUTS:
            reasons.append(f"the one-pass conv kernel takes at most {MAX_KERNEL_INPUTS} inputs")
        if len(call.convs) > MAX_KERNEL_CONVS:
            reasons.append(f"the one-pass conv kernel takes at most {MAX_KERNEL_CONVS} conv terms")
        if call.inputs[0].dtype == torch.float64:
            reasons.append("the one-pass conv kernel has no float64 path (tl.dot)")
        return reasons

    def run(self, call: ExchangeCall) -> Tensor:
        if has_tangent(call):
            # The kernels have no jvp: forward-mode AD takes the definition's
            # ops, which carry tangents (as the C++ backends do).
            check_values(call)
            return run_reference(call)
        from .. import triton as kernels  # registers the ops on first use

        if call.convs and self.conv_kernel_reasons(call):
            call = lower_convs(call)
        return kernels.exchange(call)
