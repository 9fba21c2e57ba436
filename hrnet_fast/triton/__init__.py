"""Triton backend of hrnet_fast.exchange (imported lazily by hrnet_fast.ops:
importing triton is slow, and TRITON_INTERPRET must be set before it is).

Entry points follow the contract of hrnet_fast.ops: dense (K, C) affines,
validated arguments.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .conv import exchange_conv
from .ops import exchange_triton, exchange_triton_backward

__all__ = ["exchange", "exchange_conv"]


def exchange(inputs: Sequence[Tensor], scales: Tensor, shifts: Tensor, size: Sequence[int], mode: str,
             align_corners: bool, relu: bool) -> Tensor:
    """The fused exchange through the registered Triton op (autograd included)."""
    return torch.ops.hrnet_fast.exchange_triton(list(inputs), scales, shifts, [int(size[0]), int(size[1])],
                                                mode, bool(align_corners), bool(relu))
