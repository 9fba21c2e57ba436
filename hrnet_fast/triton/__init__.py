"""Triton backend of hrnet_fast.exchange (imported lazily by hrnet_fast.ops:
importing triton is slow, and TRITON_INTERPRET must be set before it is).

Entry points follow the contract of hrnet_fast.ops: dense (K, C) affines,
validated arguments.

    index.py        interpolation index math (port of kernels/interp.h)
    forward.py      one-pass forward kernel
    backward.py     gather-form adjoint, two-stage per-channel sums
    conv_kernel.py  implicit-GEMM forward with stride-2 conv terms
    ops.py, conv.py torch.library triton_ops and their autograd
    config.py       block shapes, autotuning, host-side scales
    aot_check.py    compiles every kernel variant for sm_90 without a GPU
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .conv import exchange_conv
from .ops import exchange_triton, exchange_triton_backward  # noqa: F401  registers the ops

__all__ = ["exchange", "exchange_conv"]


def exchange(inputs: Sequence[Tensor], scales: Tensor, shifts: Tensor, size: Sequence[int], mode: str,
             align_corners: bool, relu: bool) -> Tensor:
    """The fused exchange through the registered Triton op (autograd included)."""
    return torch.ops.hrnet_fast.exchange_triton(list(inputs), scales, shifts, [int(size[0]), int(size[1])],
                                                mode, bool(align_corners), bool(relu))
