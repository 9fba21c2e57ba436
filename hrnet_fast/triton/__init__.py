"""Triton backend of hrnet_fast.exchange (imported lazily by
hrnet_fast.backend.triton: importing triton is slow, and TRITON_INTERPRET
must be set before it is).

    index.py        interpolation index math (port of kernels/interp.h)
    forward.py      one-pass forward kernel
    backward.py     separable adjoint (W pass, H pass), fixed-order sums
    conv_kernel.py  implicit-GEMM forward with stride-2 conv terms
    ops.py          the torch.library ops and their autograd
    slots.py        layouts and slot descriptors (the input pattern)
    tiles.py        offsets by layout, the gather of one slot
    tuning.py       block shapes: shipped table, heuristic, opt-in autotuning
    tuning_table.py the shipped table (benchmarks/tune_triton.py writes it)
    aot_check.py    compiles every kernel variant for sm_90 without a GPU
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..contract import ExchangeCall
from .ops import exchange_triton, exchange_triton_backward  # noqa: F401  registers the ops

__all__ = ["exchange"]


def exchange(call: ExchangeCall) -> Tensor:
    """`call` through the registered Triton op (autograd included)."""
    scales, scale_of = _given(call.scales)
    shifts, shift_of = _given(call.shifts)
    biases, bias_of = _given([b for _, _, b in call.convs])
    return torch.ops.hrnet_fast.exchange_triton(call.inputs, scales, scale_of, shifts, shift_of,
                                                [a for a, _, _ in call.convs], [w for _, w, _ in call.convs], biases,
                                                bias_of, list(call.size), call.mode, call.align_corners, call.relu)


def _given(rows: List[Optional[Tensor]]) -> Tuple[List[Tensor], List[int]]:
    """The tensors of an optional list and the slot each belongs to."""
    given = [(t, k) for k, t in enumerate(rows) if t is not None]
    return [t for t, _ in given], [k for _, k in given]
