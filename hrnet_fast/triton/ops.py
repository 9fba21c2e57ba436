"""The Triton backend as one forward op and one backward op
(torch.library.triton_op + wrap_triton, so torch.compile traces into the
kernels), with their autograd formula beside them.

    hrnet_fast::exchange_triton           the exchange, conv terms included
    hrnet_fast::exchange_triton_backward  its gradients

Affine rows and conv biases arrive as the tensors that are given plus the
slot each belongs to; absent ones cost nothing (the kernels are specialized
for them). A forward call allocates its output and launches one kernel; it
copies nothing unless a tensor is in neither standard layout (slots.py) or
a conv weight is not yet in the kernel's layout (conv_kernel.kmajor_weight).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..contract import backward_dtype, follow_format, saved_layout
from . import slots
from .backward import launch_backward
from .conv_kernel import MAX_CONVS, kmajor_weight, launch_conv_forward
from .forward import MAX_SLOTS, launch_forward


def _rows(given: List[Tensor], slots_of: List[int], count: int) -> List[Optional[Tensor]]:
    """One entry per slot, None where nothing is given."""
    rows: List[Optional[Tensor]] = [None] * count
    for t, k in zip(given, slots_of):
        rows[k] = t
    return rows


def _vectors(rows: List[Optional[Tensor]]) -> List[Optional[Tensor]]:
    return [slots.vector(r) for r in rows]


def _conv_layout(conv_inputs: List[Tensor]) -> List[Tensor]:
    """Conv inputs in one standard layout (the kernel reads them alike):
    the first one's; others are copied only when they differ."""
    first = slots.standard(conv_inputs[0])
    fmt = torch.channels_last if slots.is_cl(first) else torch.contiguous_format
    return [first] + [slots.as_format(a, fmt) for a in conv_inputs[1:]]


@torch.library.triton_op("hrnet_fast::exchange_triton", mutates_args=())
def exchange_triton(inputs: List[Tensor], scales: List[Tensor], scale_of: List[int], shifts: List[Tensor],
                    shift_of: List[int], conv_inputs: List[Tensor], conv_weights: List[Tensor],
                    conv_biases: List[Tensor], bias_of: List[int], size: List[int], mode: str, align_corners: bool,
                    relu: bool) -> Tensor:
    """y = act(sum_k interp(x_k * s_k + b_k) + sum_m conv2d(a_m, w_m, b_m, stride=2, padding=1))."""
    k = len(inputs)
    scale_rows = _rows(scales, scale_of, k)
    shift_rows = _rows(shifts, shift_of, k)
    bias_rows = _rows(conv_biases, bias_of, len(conv_inputs))
    torch.ops.hrnet_fast.exchange_check(inputs, scale_rows if scales else [], shift_rows if shifts else [],
                                        conv_inputs, conv_weights, bias_rows if conv_inputs else [], size, mode)
    x0 = inputs[0]
    out = torch.empty((x0.shape[0], x0.shape[1], size[0], size[1]), dtype=x0.dtype, device=x0.device,
                      memory_format=follow_format(x0))
    xs = [slots.standard(x) for x in inputs]
    scale_rows, shift_rows, bias_rows = _vectors(scale_rows), _vectors(shift_rows), _vectors(bias_rows)
    if conv_inputs:
        if k > MAX_SLOTS or len(conv_inputs) > MAX_CONVS or x0.dtype == torch.float64:
            raise ValueError(f"hrnet_fast.exchange_triton: the one-pass conv kernel takes float32/16 or bfloat16, "
                             f"at most {MAX_SLOTS} inputs and {MAX_CONVS} conv terms; got {x0.dtype}, "
                             f"{k} inputs, {len(conv_inputs)} conv terms")
        weights = [kmajor_weight(w, x0.dtype) for w in conv_weights]
        launch_conv_forward(out, xs, scale_rows, shift_rows, _conv_layout(list(conv_inputs)), weights, bias_rows,
                            mode, align_corners, relu)
    else:
        launch_forward(out, xs, scale_rows, shift_rows, mode, align_corners, relu)
    return out


@torch.library.triton_op("hrnet_fast::exchange_triton_backward", mutates_args=())
def exchange_triton_backward(grad: Tensor, out: Optional[Tensor], inputs: List[Optional[Tensor]],
                             input_sizes: List[int], channels_last: List[bool], scales: List[Tensor],
                             scale_of: List[int], conv_inputs: List[Tensor], conv_weights: List[Tensor], mode: str,
                             align_corners: bool, relu: bool
                             ) -> Tuple[List[Tensor], Tensor, Tensor, List[Tensor], List[Tensor]]:
    """Gradients of the inputs, of the given scales ((len(scales), C), in
    their order), of the (C,) shift every shift and conv bias shares (both
    in the accumulation dtype), of the conv inputs and the conv weights.
    As hrnet_fast::exchange_backward, it reads only what autograd keeps:
    out when relu (else None), inputs[k] where scale k is given (the others
    may be None), and every input's (h, w) and layout."""
    k = len(inputs)
    scale_rows = _rows(scales, scale_of, k)
    torch.ops.hrnet_fast.exchange_backward_check(grad, out, inputs, input_sizes, channels_last,
                                                 scale_rows if scales else [], conv_inputs, conv_weights, mode, relu)
    dtype = backward_dtype(grad, out)
    # The kernels read grad and out in the layout of the output, which
    # follows inputs[0].
    fmt = torch.channels_last if channels_last[0] else torch.contiguous_format
    grad = slots.as_format(grad.to(dtype), fmt)
    out = slots.as_format(out, fmt) if relu else None
    xs = [None if x is None else slots.standard(x) for x in inputs]
    n, c = grad.shape[0], grad.shape[1]
    shapes = [(n, c, input_sizes[2 * j], input_sizes[2 * j + 1]) for j in range(k)]
    grad_inputs, grad_scales, grad_shift, gm = launch_backward(grad, out, xs, shapes,
                                                               list(channels_last), _vectors(scale_rows), mode,
                                                               align_corners, relu, want_gm=bool(conv_inputs))
    grad_a, grad_w = [], []
    for a, w in zip(conv_inputs, conv_weights):
        ga, gw, _ = torch.ops.aten.convolution_backward(gm, a, w.to(a.dtype), None, [2, 2], [1, 1], [1, 1], False,
                                                        [0, 0], 1, [True, True, False])
        grad_a.append(ga)
        grad_w.append(gw.to(w.dtype))
    return grad_inputs, grad_scales, grad_shift, grad_a, grad_w


def _setup_context(ctx, inputs, output) -> None:
    (tensors, scales, scale_of, shifts, shift_of, conv_inputs, conv_weights, conv_biases, bias_of, _size, mode,
     align_corners, relu) = inputs
    # What the backward reads and nothing more (the C++ autograd's rule):
    # the output when there is a ReLU, the inputs that have a scale, the
    # scales and the conv terms; the other inputs as sizes and layouts.
    ctx.save_for_backward(output if relu else None, *[tensors[j] for j in scale_of], *scales, *conv_inputs,
                          *conv_weights)
    ctx.layout = (len(tensors), list(scale_of), len(shifts), len(conv_inputs), len(conv_biases),
                  [not shift_of, not bias_of], saved_layout(tensors))
    ctx.options = (mode, align_corners, relu)


def _backward(ctx, grad):
    k, scale_of, n_shifts, m, n_biases, (no_shifts, no_biases), (sizes, channels_last) = ctx.layout
    output, *rest = ctx.saved_tensors
    scaled, rest = rest[:len(scale_of)], rest[len(scale_of):]
    scales, rest = rest[:len(scale_of)], rest[len(scale_of):]
    conv_inputs, conv_weights = rest[:m], rest[m:]
    tensors = _rows(scaled, scale_of, k)
    gi, gs, gb, ga, gw = torch.ops.hrnet_fast.exchange_triton_backward(grad, output, tensors, sizes, channels_last,
                                                                      scales, scale_of, conv_inputs, conv_weights,
                                                                      *ctx.options)
    grad_scales = [g.to(s.dtype) for g, s in zip(gs.unbind(0), scales)]
    # One entry per argument, shaped like it (autograd compares the
    # structures): an empty int list is an empty list, any other None.
    return (list(gi), grad_scales, [] if not scale_of else None, [gb] * n_shifts, [] if no_shifts else None,
            list(ga), list(gw), [gb] * n_biases, [] if no_biases else None, None, None, None, None)


torch.library.register_autograd("hrnet_fast::exchange_triton", _backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("hrnet_fast.exchange: double backward is not supported (the backward of the Triton "
                       "backend is not differentiable)")


torch.library.register_autograd("hrnet_fast::exchange_triton_backward", _no_double_backward)
