"""The exchange op defined in plain PyTorch: the specification every backend
is tested against.

    y = act( sum_k interp(inputs[k] * scales[k] + shifts[k], size)
             + sum_m conv2d(a_m, w_m, b_m, stride=2, padding=1) )

Example:
    >>> import torch, hrnet_fast
    >>> x0, x1 = torch.randn(2, 8, 16, 12), torch.randn(2, 8, 8, 6)
    >>> hrnet_fast.reference([x0, x1]).shape
    torch.Size([2, 8, 16, 12])
"""
from __future__ import annotations

import sys
import types
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .contract import ConvTerm, Rows, Size


def exchange(inputs: Sequence[Tensor], scales: Rows = None, shifts: Rows = None, *, convs: Sequence[ConvTerm] = (),
             size: Optional[Size] = None, mode: str = "nearest", align_corners: bool = False,
             relu: bool = True) -> Tensor:
    """Reference exchange: per-input affine, size-based interpolation, sum,
    stride-2 conv terms, optional ReLU; each step an ordinary PyTorch op."""
    # Sizes stay as given: under torch.jit.trace they are tensors, and
    # F.interpolate(size=...) then records them instead of constants.
    out_h, out_w = (size[0], size[1]) if size is not None else tuple(inputs[0].shape[-2:])
    total = None
    for k, x in enumerate(inputs):
        t = x
        if scales is not None and scales[k] is not None:
            t = t * scales[k].to(t.dtype).view(1, -1, 1, 1)
        if shifts is not None and shifts[k] is not None:
            t = t + shifts[k].to(t.dtype).view(1, -1, 1, 1)
        if tuple(t.shape[-2:]) != (out_h, out_w):
            t = F.interpolate(t, size=(out_h, out_w), mode=mode,
                              align_corners=align_corners if mode == "bilinear" else None)
        total = t if total is None else total + t
    for a, w, b in convs:
        c = F.conv2d(a, w, b, stride=2, padding=1)
        total = c if total is None else total + c
    if relu:
        return torch.relu(total)
    # One same-size input and nothing to compute: still a new tensor, as
    # every backend returns, never the caller's (an in-place op on the
    # result must not edit the input).
    return total.clone() if any(total is x for x in inputs) else total


class _CallableModule(types.ModuleType):
    """Lets `hrnet_fast.reference(...)` be called directly, as well as
    `hrnet_fast.reference.exchange(...)`."""

    def __call__(self, *args, **kwargs) -> Tensor:
        return exchange(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
