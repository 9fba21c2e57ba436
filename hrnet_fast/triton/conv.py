"""exchange with stride-2 conv terms on the Triton backend.

One pass where the implicit-GEMM kernel takes the call (conv_kernel.py):
hrnet_fast::exchange_conv_triton, whose backward masks the gradient once,
hands it to aten.convolution_backward for the conv inputs and weights, and
to the exchange's gather kernels for everything else.

Otherwise (float64, more than 4 inputs or 3 conv terms) the conv terms run
as library convolutions and join the fused sum as extra same-size inputs
with scale 1 and shift = bias: exact and differentiable through F.conv2d
and the exchange op.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops as _ops
from .backward import launch_backward
from .conv_kernel import fits_one_pass, launch_conv_forward, weight_matrix

ConvTerm = Tuple[Tensor, Tensor, Optional[Tensor]]


@torch.library.triton_op("hrnet_fast::exchange_conv_triton", mutates_args=())
def exchange_conv_triton(inputs: List[Tensor], scales: Tensor, shifts: Tensor, conv_inputs: List[Tensor],
                         weights: List[Tensor], biases: Tensor, size: List[int], mode: str,
                         align_corners: bool, relu: bool) -> Tensor:
    """y = act(sum_k interp(x_k * s_k + b_k) + sum_m conv2d(a_m, w_m, stride=2, padding=1) + sum_m
    biases[m]), in one pass. biases: (M, C); weights in the conv inputs' dtype."""
    x0 = inputs[0]
    out = torch.empty((x0.shape[0], x0.shape[1], size[0], size[1]), dtype=x0.dtype, device=x0.device,
                      memory_format=_ops.follow_format(x0))
    mats = [weight_matrix(w) for w in weights]
    bias = biases.to(torch.float32).sum(0)
    launch_conv_forward(out, list(inputs), scales.contiguous(), shifts.contiguous(), list(conv_inputs), mats,
                        bias, mode, align_corners, relu)
    return out


@torch.library.triton_op("hrnet_fast::exchange_conv_triton_backward", mutates_args=())
def exchange_conv_triton_backward(grad: Tensor, out: Tensor, inputs: List[Tensor], scales: Tensor,
                                  conv_inputs: List[Tensor], weights: List[Tensor], mode: str,
                                  align_corners: bool, relu: bool
                                  ) -> Tuple[List[Tensor], Tensor, Tensor, List[Tensor], List[Tensor]]:
    """Gradients of the inputs, scales, shifts, conv inputs and weights (the
    biases' gradient is any row of the shifts' gradient)."""
    # The masked gradient once, read by every consumer below.
    gm = torch.where(out <= 0, torch.zeros((), dtype=grad.dtype, device=grad.device), grad) if relu else grad
    grad_inputs, grad_scales, grad_shifts = launch_backward(gm, out, list(inputs), scales.contiguous(), mode,
                                                            align_corners, False)
    grad_a, grad_w = [], []
    for a, w in zip(conv_inputs, weights):
        ga, gw, _ = torch.ops.aten.convolution_backward(gm, a, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0],
                                                        1, [True, True, False])
        grad_a.append(ga)
        grad_w.append(gw)
    return grad_inputs, grad_scales, grad_shifts, grad_a, grad_w


def _setup_context(ctx, inputs, output):
    tensors, scales, _shifts, conv_inputs, weights, _biases, _size, mode, align_corners, relu = inputs
    ctx.save_for_backward(output, scales, *tensors, *conv_inputs, *weights)
    ctx.counts = (len(tensors), len(conv_inputs))
    ctx.options = (mode, align_corners, relu)


def _backward(ctx, grad):
    output, scales, *rest = ctx.saved_tensors
    k, m = ctx.counts
    tensors, conv_inputs, weights = rest[:k], rest[k:k + m], rest[k + m:]
    gi, gs, gsh, ga, gw = torch.ops.hrnet_fast.exchange_conv_triton_backward(
        grad, output, tensors, scales, conv_inputs, weights, *ctx.options)
    grad_biases = gsh[:1].expand(m, -1).contiguous()
    return list(gi), gs, gsh, list(ga), list(gw), grad_biases, None, None, None, None


torch.library.register_autograd("hrnet_fast::exchange_conv_triton", _backward, setup_context=_setup_context)


def _library_path(inputs, scales, shifts, convs, size, mode, align_corners, relu) -> Tensor:
    from . import exchange  # the package entry point; imported here to avoid a cycle

    channels = scales.shape[1]
    extra = [F.conv2d(a, w.to(a.dtype), None, stride=2, padding=1) for a, w, _ in convs]
    ones = torch.ones((len(convs), channels), dtype=scales.dtype, device=scales.device)
    biases = [torch.zeros(channels, dtype=shifts.dtype, device=shifts.device) if b is None
              else b.to(shifts.dtype) for _, _, b in convs]
    return exchange(list(inputs) + extra, torch.cat([scales, ones]), torch.cat([shifts, torch.stack(biases)]),
                    size, mode, align_corners, relu)


def exchange_conv(inputs: Sequence[Tensor], scales: Tensor, shifts: Tensor, convs: Sequence[ConvTerm],
                  size: Sequence[int], mode: str, align_corners: bool, relu: bool) -> Tensor:
    """y = act(sum_k interp(x_k * s_k + b_k) + sum_m conv2d(a_m, w_m, bias_m, stride=2, padding=1))."""
    conv_inputs = [a for a, _, _ in convs]
    if not fits_one_pass(list(inputs), conv_inputs):
        return _library_path(inputs, scales, shifts, convs, size, mode, align_corners, relu)
    channels = scales.shape[1]
    weights = [w.to(a.dtype) for a, w, _ in convs]
    biases = torch.stack([torch.zeros(channels, dtype=shifts.dtype, device=shifts.device) if b is None
                          else b.to(shifts.dtype) for _, _, b in convs])
    return torch.ops.hrnet_fast.exchange_conv_triton(list(inputs), scales, shifts, conv_inputs, weights, biases,
                                                     [int(size[0]), int(size[1])], mode, bool(align_corners),
                                                     bool(relu))
