"""The Triton backend as one forward op and one backward op
(torch.library.triton_op + wrap_triton, so torch.compile traces into the
kernels), with their autograd formula beside them.

    hrnet_fast::exchange_triton           the exchange, conv terms included
    hrnet_fast::exchange_triton_backward  its gradients

The arguments follow the C++ op's conventions (scales / shifts: [] or one
optional (C,) tensor per input) plus the conv terms as three lists. Conv
terms go to the one-pass implicit-GEMM kernel (conv_kernel.py); the
backend lowers calls that kernel cannot take before they get here.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..contract import affine_dtype, follow_format
from .backward import launch_backward
from .conv_kernel import MAX_CONVS, launch_conv_forward, weight_matrix
from .forward import MAX_SLOTS, launch_forward


def _optional(given: List[Tensor], slots: List[int], count: int) -> List[Optional[Tensor]]:
    """The C++ convention again: one entry per slot, None where none is given."""
    rows: List[Optional[Tensor]] = [None] * count
    for t, k in zip(given, slots):
        rows[k] = t
    return rows if given else []


def _dense(rows: List[Optional[Tensor]], count: int, channels: int, fill: float, dtype: torch.dtype,
           device: torch.device) -> Tensor:
    """(count, channels) rows in `dtype`, absent ones filled with `fill`."""
    if not rows:
        return torch.full((count, channels), fill, dtype=dtype, device=device)
    return torch.stack([torch.full((channels,), fill, dtype=dtype, device=device) if r is None else r.to(dtype)
                        for r in rows])


@torch.library.triton_op("hrnet_fast::exchange_triton", mutates_args=())
def exchange_triton(inputs: List[Tensor], scales: List[Tensor], scale_of: List[int], shifts: List[Tensor],
                    shift_of: List[int], conv_inputs: List[Tensor], conv_weights: List[Tensor],
                    conv_biases: List[Tensor], bias_of: List[int], size: List[int], mode: str, align_corners: bool,
                    relu: bool) -> Tensor:
    """y = act(sum_k interp(x_k * s_k + b_k) + sum_m conv2d(a_m, w_m, b_m, stride=2, padding=1)).
    The affine rows and conv biases that are given, each with the index of
    the input (or conv term) it belongs to: lists of tensors only, so that
    autograd hands back one gradient per tensor."""
    k = len(inputs)
    scale_rows = _optional(scales, scale_of, k)
    shift_rows = _optional(shifts, shift_of, k)
    bias_rows = _optional(conv_biases, bias_of, len(conv_inputs))
    torch.ops.hrnet_fast.exchange_check(inputs, scale_rows, shift_rows, conv_inputs, conv_weights,
                                        bias_rows if conv_inputs else [], size, mode)
    x0 = inputs[0]
    channels = x0.shape[1]
    acc = affine_dtype(x0.dtype)
    out = torch.empty((x0.shape[0], channels, size[0], size[1]), dtype=x0.dtype, device=x0.device,
                      memory_format=follow_format(x0))
    dense_scales = _dense(scale_rows, k, channels, 1.0, acc, x0.device)
    dense_shifts = _dense(shift_rows, k, channels, 0.0, acc, x0.device)
    if conv_inputs:
        if len(inputs) > MAX_SLOTS or len(conv_inputs) > MAX_CONVS or x0.dtype == torch.float64:
            raise ValueError(f"hrnet_fast.exchange_triton: the one-pass conv kernel takes float32/16 or bfloat16, "
                             f"at most {MAX_SLOTS} inputs and {MAX_CONVS} conv terms; got {x0.dtype}, "
                             f"{len(inputs)} inputs, {len(conv_inputs)} conv terms")
        mats = [weight_matrix(w.to(x0.dtype)) for w in conv_weights]
        bias = torch.zeros(channels, dtype=torch.float32, device=x0.device)
        for b in conv_biases:
            bias = bias + b.to(torch.float32)
        launch_conv_forward(out, list(inputs), dense_scales, dense_shifts, list(conv_inputs), mats, bias, mode,
                            align_corners, relu)
    else:
        launch_forward(out, list(inputs), dense_scales, dense_shifts, mode, align_corners, relu)
    return out


@torch.library.triton_op("hrnet_fast::exchange_triton_backward", mutates_args=())
def exchange_triton_backward(grad: Tensor, out: Tensor, inputs: List[Tensor], scales: List[Tensor],
                             scale_of: List[int], conv_inputs: List[Tensor], conv_weights: List[Tensor], mode: str,
                             align_corners: bool, relu: bool
                             ) -> Tuple[List[Tensor], Tensor, Tensor, List[Tensor], List[Tensor]]:
    """Gradients of the inputs, the (K, C) scales, the (C,) shift shared by
    every shift and conv bias (accumulation dtype), the conv inputs and the
    conv weights."""
    scale_rows = _optional(scales, scale_of, len(inputs))
    torch.ops.hrnet_fast.exchange_check(inputs, scale_rows, [], conv_inputs, conv_weights,
                                        [None] * len(conv_inputs), [out.shape[2], out.shape[3]], mode)
    x0 = inputs[0]
    dense_scales = _dense(scale_rows, len(inputs), x0.shape[1], 1.0, affine_dtype(x0.dtype), x0.device)
    grad = grad.to(x0.dtype)
    if conv_inputs and relu:
        # The masked gradient once, read by every consumer below.
        grad = torch.where(out <= 0, torch.zeros((), dtype=grad.dtype, device=grad.device), grad)
        relu = False
    grad_inputs, grad_scales, grad_shift = launch_backward(grad, out, list(inputs), dense_scales, mode,
                                                           align_corners, relu)
    grad_a, grad_w = [], []
    for a, w in zip(conv_inputs, conv_weights):
        ga, gw, _ = torch.ops.aten.convolution_backward(grad, a, w.to(a.dtype), None, [2, 2], [1, 1], [1, 1], False,
                                                        [0, 0], 1, [True, True, False])
        grad_a.append(ga)
        grad_w.append(gw.to(w.dtype))
    return grad_inputs, grad_scales, grad_shift, grad_a, grad_w


def _setup_context(ctx, inputs, output) -> None:
    (tensors, scales, scale_of, shifts, shift_of, conv_inputs, conv_weights, conv_biases, bias_of, _size, mode,
     align_corners, relu) = inputs
    ctx.save_for_backward(output, *tensors, *scales, *conv_inputs, *conv_weights)
    ctx.layout = (len(tensors), list(scale_of), len(shifts), len(conv_inputs), len(conv_biases),
                  [not shift_of, not bias_of])
    ctx.options = (mode, align_corners, relu)


def _backward(ctx, grad):
    k, scale_of, n_shifts, m, n_biases, (no_shifts, no_biases) = ctx.layout
    output, *rest = ctx.saved_tensors
    tensors, rest = rest[:k], rest[k:]
    scales, rest = rest[:len(scale_of)], rest[len(scale_of):]
    conv_inputs, conv_weights = rest[:m], rest[m:]
    gi, gs, gb, ga, gw = torch.ops.hrnet_fast.exchange_triton_backward(grad, output, tensors, scales, scale_of,
                                                                      conv_inputs, conv_weights, *ctx.options)
    grad_scales = [gs[slot].to(s.dtype) for s, slot in zip(scales, scale_of)]
    # One entry per argument, shaped like it (autograd compares the
    # structures): an empty int list is an empty list, any other None.
    return (list(gi), grad_scales, [] if not scale_of else None, [gb] * n_shifts, [] if no_shifts else None,
            list(ga), list(gw), [gb] * n_biases, [] if no_biases else None, None, None, None, None)


torch.library.register_autograd("hrnet_fast::exchange_triton", _backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("hrnet_fast.exchange: double backward is not supported (the backward of the Triton "
                       "backend is not differentiable)")


torch.library.register_autograd("hrnet_fast::exchange_triton_backward", _no_double_backward)
