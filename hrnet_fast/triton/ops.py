"""The Triton backend as torch.library ops: hrnet_fast::exchange_triton and
hrnet_fast::exchange_triton_backward (triton_op + wrap_triton, so
torch.compile traces into the kernels), with autograd registered between
them using the formula shared with the C++ backends."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

from .. import ops as _ops
from .backward import launch_backward
from .forward import launch_forward


@torch.library.triton_op("hrnet_fast::exchange_triton", mutates_args=())
def exchange_triton(inputs: List[Tensor], scales: Tensor, shifts: Tensor, size: List[int], mode: str,
                    align_corners: bool, relu: bool) -> Tensor:
    """y = act(sum_k scale_k * interp(x_k, size) + shift_k), in one pass."""
    x0 = inputs[0]
    out = torch.empty((x0.shape[0], x0.shape[1], size[0], size[1]), dtype=x0.dtype, device=x0.device,
                      memory_format=_ops.follow_format(x0))
    launch_forward(out, list(inputs), scales.contiguous(), shifts.contiguous(), mode, align_corners, relu)
    return out


@torch.library.triton_op("hrnet_fast::exchange_triton_backward", mutates_args=())
def exchange_triton_backward(grad: Tensor, out: Tensor, inputs: List[Tensor], scales: Tensor, mode: str,
                             align_corners: bool, relu: bool) -> Tuple[List[Tensor], Tensor, Tensor]:
    """Gradients of every input, of scales (K, C) and of shifts (K, C)."""
    return launch_backward(grad, out, list(inputs), scales.contiguous(), mode, align_corners, relu)


torch.library.register_autograd(
    "hrnet_fast::exchange_triton",
    _ops.make_exchange_backward(torch.ops.hrnet_fast.exchange_triton_backward),
    setup_context=_ops.setup_exchange_context,
)
