"""Fake (meta) kernels of the C++ ops, in one place: what torch.compile,
torch.export, FakeTensorMode and meta tensors run instead of a kernel.

Each runs the op's value rules first (hrnet_fast::exchange_check, the same
C++ checks the real kernels run), so a bad call fails while tracing exactly
as it would when run -- including a device mix, which only a fake kernel
sees on a meta or fake tensor. Output strides follow the C++ rule
(contract.follow_format).
"""
from __future__ import annotations

import torch

from ._ext import extension
from .contract import affine_dtype, backward_dtype, follow_format


def exchange_fake(inputs, scales, shifts, size, mode, align_corners, relu):
    torch.ops.hrnet_fast.exchange_check(inputs, scales, shifts, [], [], [], size, mode)
    x0 = inputs[0]
    return torch.empty((x0.shape[0], x0.shape[1], size[0], size[1]), dtype=x0.dtype, device=x0.device,
                       memory_format=follow_format(x0))


def exchange_backward_fake(grad_out, out, inputs, input_sizes, channels_last, scales, mode, align_corners, relu):
    torch.ops.hrnet_fast.exchange_backward_check(grad_out, out, inputs, input_sizes, channels_last, scales, [], [],
                                                 mode, relu)
    n, c = grad_out.shape[0], grad_out.shape[1]
    dtype = backward_dtype(grad_out, out)
    grads = [torch.empty((n, c, input_sizes[2 * k], input_sizes[2 * k + 1]), dtype=dtype, device=grad_out.device,
                         memory_format=torch.channels_last if cl else torch.contiguous_format)
             for k, cl in enumerate(channels_last)]
    acc = affine_dtype(dtype)
    return (grads, torch.empty((len(inputs), c), dtype=acc, device=grad_out.device),
            torch.empty((c,), dtype=acc, device=grad_out.device))


if extension() is not None:
    torch.library.register_fake("hrnet_fast::exchange")(exchange_fake)
    torch.library.register_fake("hrnet_fast::exchange_backward")(exchange_backward_fake)
