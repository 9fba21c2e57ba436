"""The public functional API: `exchange` and `backends`.

Every backend computes the same thing (see hrnet_fast.reference):

    y = act( sum_k interp(inputs[k] * scales[k] + shifts[k], size)
             + sum_m conv2d(a_m, w_m, b_m, stride=2, padding=1) )

A call is put in normal form (contract.make_call: structure only), handed
to the backend `backend.choose` picks, and enters that backend's op once;
the op checks the values (csrc/checks.cpp). Traces (torch.jit.trace),
ONNX exports and torch.export record the definition instead: standard
operators that every runtime has, so the recorded program loads and runs
where hrnet_fast is not installed.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _fakes  # noqa: F401  registers the C++ ops' fake kernels
from .backend import available, choose, run_reference
from .backend.base import BoundCall
from .contract import ConvTerm, Rows, Size, make_call

_is_tracing = torch.jit.is_tracing
_is_compiling = torch.compiler.is_compiling
_is_onnx_export = torch.onnx.is_in_onnx_export
_is_exporting = torch.compiler.is_exporting


def backends() -> Dict[str, bool]:
    """Which backends can run on this machine.

    Example:
        >>> import hrnet_fast
        >>> hrnet_fast.backends()["reference"]
        True
    """
    return available()


def exchange(
    inputs: Sequence[Tensor],
    scales: Rows = None,
    shifts: Rows = None,
    *,
    convs: Sequence[ConvTerm] = (),
    size: Optional[Size] = None,
    mode: str = "nearest",
    align_corners: bool = False,
    relu: bool = True,
    backend: str = "auto",
) -> Tensor:
    """Fused HRNet exchange: affine, resize to `size`, stride-2 conv terms,
    sum and ReLU in one pass.

    Args:
        inputs: tensors (N, C, h_k, w_k) with the same N, C, dtype and device,
            each no larger than `size` (which defaults to inputs[0]'s), except
            in bilinear mode, which also resizes down.
        scales, shifts: None, or one entry per input, each None (the
            identity, at no cost) or a (C,) tensor: a folded BatchNorm,
            y = x * scale + shift.
        convs: (a, weight, bias) triples adding conv2d(a, weight, bias,
            stride=2, padding=1), whose output must be `size`.
        mode: "nearest" or "bilinear" (size-based, as F.interpolate(size=...)).
        align_corners: for bilinear, as in F.interpolate.
        relu: apply ReLU to the sum.
        backend: "auto", "reference", "cpu", "cuda" or "triton".

    Raises:
        TypeError: an argument of the wrong kind or dtype.
        ValueError: shapes, devices, sizes or the mode do not fit together,
            or the named backend cannot take this call.
        RuntimeError: the named backend cannot run on this machine.

    Example:
        >>> import torch, hrnet_fast
        >>> x0, x1 = torch.randn(2, 8, 15, 9), torch.randn(2, 8, 8, 5)
        >>> s, b = torch.rand(8) + 0.5, torch.randn(8)
        >>> y = hrnet_fast.exchange([x0, x1], [None, s], [None, b], mode="bilinear")
        >>> torch.allclose(y, hrnet_fast.reference([x0, x1], [None, s], [None, b], mode="bilinear"), atol=1e-5)
        True
    """
    call = make_call(inputs, scales, shifts, convs, size, mode, align_corners, relu)
    # The legacy ONNX exporter traces; the dynamo one and torch.export
    # compile (checked first: is_in_onnx_export costs two imports per
    # call). Unchecked: the value check is a custom op too, and would stay
    # in the exported program; the standard ops raise on bad shapes.
    if _is_tracing() or (_is_compiling() and (_is_exporting() or _is_onnx_export())):
        return run_reference(call)
    return choose(backend, call).run(call)


def bind_exchange(inputs: Sequence[Tensor], convs: Sequence[ConvTerm], size: Tuple[int, int], mode: str,
                  align_corners: bool, relu: bool, backend: str,
                  shifts: Optional[Sequence[Optional[Tensor]]] = None) -> BoundCall:
    """A runner `(inputs, convs) -> Tensor` for later scale-free calls like
    this one (same structure, shifts, mode and size; tensors of the same
    shapes, dtype, device and layout), bound to the backend this call gets:
    what an eval program keeps per row (Backend.bind). Not for traces or
    compiled code, which must record `exchange` itself."""
    call = make_call(inputs, None, shifts, convs, size, mode, align_corners, relu)
    return choose(backend, call).bind(call)

