"""What a backend is: a name, what it can take (declared as data), why it
cannot take a given call, and how it runs one.

The pattern is xformers' fmha dispatch: each backend answers
`not_supported_reasons(call)`; `backend="auto"` takes the first backend of
a priority list that answers nothing, and a backend asked for by name that
does not fit raises one error listing every reason.
"""
from __future__ import annotations

from typing import Callable, ClassVar, FrozenSet, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..contract import ExchangeCall, check_values

# (inputs, conv terms) -> output; see Backend.bind.
BoundCall = Callable[[List[Tensor], Sequence[tuple]], Tensor]

FLOAT_DTYPES: FrozenSet[torch.dtype] = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine (not built, no device, no
    package)."""


class BackendUnsupported(ValueError):
    """The backend runs here but cannot take this call (device, dtype,
    input count)."""


class Backend:
    """One implementation of the exchange. Subclasses declare:

    name:         the `backend=` string that selects it
    devices:      tensor device types it takes
    dtypes:       input dtypes it takes
    max_inputs:   most inputs one call may have (None: any)
    conv_terms:   "kernel": stride-2 conv terms computed inside its kernel
                  (where `conv_kernel_reasons` allows); "library": run as
                  library convolutions that join the sum as inputs
    conv_note:    how it computes conv terms, for the README's table
    notes:        one line for the README's table
    """
    name: ClassVar[str]
    devices: ClassVar[FrozenSet[str]]
    dtypes: ClassVar[FrozenSet[torch.dtype]] = FLOAT_DTYPES
    max_inputs: ClassVar[Optional[int]] = None
    conv_terms: ClassVar[str] = "library"
    conv_note: ClassVar[str] = "conv terms as library convolutions"
    notes: ClassVar[str] = ""

    def unavailable_reason(self) -> Optional[str]:
        """Why this backend cannot run on this machine at all, or None."""
        return None

    def supported_devices(self) -> FrozenSet[str]:
        """Device types it takes now (may depend on the environment)."""
        return self.devices

    def not_supported_reasons(self, call: ExchangeCall) -> List[str]:
        """Every reason this backend cannot take `call` (empty: it can)."""
        reasons = []
        unavailable = self.unavailable_reason()
        if unavailable is not None:
            reasons.append(unavailable)
        x0 = call.inputs[0]
        devices = self.supported_devices()
        if x0.device.type not in devices:
            reasons.append(f"it takes {' or '.join(sorted(devices))} tensors, got {x0.device.type}")
        if x0.dtype not in self.dtypes:
            reasons.append(f"it takes {', '.join(sorted(str(d) for d in self.dtypes))}, got {x0.dtype}")
        if self.max_inputs is not None and len(call.inputs) + self.lowered_inputs(call) > self.max_inputs:
            reasons.append(f"it takes at most {self.max_inputs} inputs (conv terms it runs as library "
                           f"convolutions count as inputs), got {len(call.inputs) + self.lowered_inputs(call)}")
        return reasons

    def conv_kernel_reasons(self, call: ExchangeCall) -> List[str]:
        """Why the conv terms of `call` cannot run inside the kernel (they
        are then lowered to library convolutions); always some reason for a
        "library" backend."""
        return ["conv terms run as library convolutions"] if self.conv_terms != "kernel" else []

    def lowered_inputs(self, call: ExchangeCall) -> int:
        """Inputs the conv terms add when they run as library convolutions."""
        return len(call.convs) if call.convs and self.conv_kernel_reasons(call) else 0

    def run(self, call: ExchangeCall) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def bind(self, call: ExchangeCall) -> "BoundCall":
        """A runner for later calls like `call` -- the same structure, mode
        and size, inputs of the same shapes, dtype, device and layout --
        that differ only in their tensors: what an inference plan keeps per
        row so that a call costs little more than the kernel (the caller
        guarantees the likeness; the op still checks its values)."""
        return lambda inputs, convs: self.run(call._replace(inputs=inputs, convs=convs))


def lower_convs(call: ExchangeCall) -> ExchangeCall:
    """The same call with each conv term computed by F.conv2d (cuDNN /
    oneDNN) and added as one more same-size input whose shift is the bias:
    exact, and differentiable through the convolution and the op."""
    if not call.convs:
        return call
    check_values(call)  # the conv terms' own rules, before the convolutions run
    k = len(call.inputs)
    extra = [F.conv2d(a, w if w.dtype == a.dtype else w.to(a.dtype), None, stride=2, padding=1)
             for a, w, _ in call.convs]
    biases = [b for _, _, b in call.convs]
    scales = call.scales + [None] * len(extra) if call.scales else []
    if call.shifts or any(b is not None for b in biases):
        shifts = (call.shifts or [None] * k) + biases
    else:
        shifts = []
    return call._replace(inputs=call.inputs + extra, scales=scales, shifts=shifts, convs=[])


def describe(backend: Backend) -> Tuple[str, str, str, str]:
    """(name, devices, limits, notes) for the README's backend table."""
    limits = []
    if backend.max_inputs is not None:
        limits.append(f"at most {backend.max_inputs} inputs")
    limits.append(backend.conv_note)
    devices = " or ".join(sorted(backend.devices))
    return backend.name, devices, "; ".join(limits), backend.notes
