"""The coarse branches' 1x1 convolutions as matrix products.

On the CPU, oneDNN's 1x1 convolution at HRNet's exchange shapes (a few
hundred channels over a few hundred pixels, batch 1-8) costs 1.1-2.5x a
BLAS GEMM of the same size, twice in NCHW: its fixed cost (primitive lookup,
reorders to and from blocked layouts) is as large as the arithmetic. A 1x1 convolution with
stride 1, no padding and one group *is* a GEMM over the pixels, so
`conv1x1` calls one directly (benchmarks/fuse_convs_cpu.py). Autograd
and autocast treat the products as they treat conv2d (both run in the lower
precision under CPU autocast), and the result keeps the input's memory
format, as F.conv2d does.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from hrnet_fast.pointwise import conv1x1
    >>> x, w, b = torch.randn(2, 8, 5, 3), torch.randn(4, 8, 1, 1), torch.randn(4)
    >>> torch.allclose(conv1x1(x, w, b), F.conv2d(x, w, b), atol=1e-5)
    True
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def conv1x1(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """F.conv2d(x, weight, bias) for a (C_out, C_in, 1, 1) weight, stride 1,
    no padding, one group. Falls back to F.conv2d for anything else (other
    devices, strided layouts), so it is always safe to call."""
    if (x.device.type != "cpu" or x.dim() != 4 or weight.dim() != 4 or weight.shape[2:] != (1, 1)
            or x.shape[1] != weight.shape[1] or x.numel() == 0):
        return F.conv2d(x, weight, bias)
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    w2 = weight.view(c_out, c_in)
    if x.is_contiguous():
        # (C_out, C_in) @ (N, C_in, HW): one batched product, bias as the
        # accumulator it starts from. bmm over the expanded weight, not
        # matmul: matmul folds the batch by copying x, and autograd would
        # keep that copy besides x itself.
        x3 = x.view(n, c_in, h * w)
        if bias is None:
            y = torch.bmm(w2.expand(n, c_out, c_in), x3)
        else:
            y = torch.baddbmm(bias.view(1, c_out, 1), w2.expand(n, c_out, c_in), x3)
        return y.view(n, c_out, h, w)
    if x.is_contiguous(memory_format=torch.channels_last):
        # Pixels as rows: (N HW, C_in) @ (C_in, C_out) is channels_last out.
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c_in)
        y = torch.mm(rows, w2.t()) if bias is None else torch.addmm(bias, rows, w2.t())
        return y.view(n, h, w, c_out).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


def bound_conv1x1(like: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Callable[[Tensor], Tensor]:
    """`conv1x1(x, weight, bias)` for inputs `x` of `like`'s shape, device
    and layout, with everything that depends only on them (the weight's
    matrix view and batch expansion, the bias column) made once: the eval
    plan's per-call work is then one product and two views. The caller
    guarantees the likeness; other inputs take the general function."""
    if not (like.device.type == "cpu" and like.dim() == 4 and weight.dim() == 4 and weight.shape[2:] == (1, 1)
            and like.shape[1] == weight.shape[1] and like.numel() > 0 and like.is_contiguous()
            and bias is not None and not like.requires_grad):
        return lambda x: conv1x1(x, weight, bias)
    n, c_in, h, w = like.shape
    c_out = weight.shape[0]
    w3 = weight.view(c_out, c_in).expand(n, c_out, c_in)
    b3 = bias.view(1, c_out, 1)
    flat, out = (n, c_in, h * w), (n, c_out, h, w)
    baddbmm = torch.baddbmm
    return lambda x: baddbmm(b3, w3, x.view(flat)).view(out)

