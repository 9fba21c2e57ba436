"""How a folded convolution runs, by engine (plan.program): the Python side
of each, shared by the Python executor and optimize's fused convolutions.
The C++ executor (csrc/plan/executor.cpp) makes the same calls.

    aten    F.conv2d, then an in-place ReLU on its fresh output
    gemm    a 1x1 convolution as one matrix product (hrnet_fast.pointwise)
    mkldnn  oneDNN's convolution (bias in the call), then an in-place
            ReLU: oneDNN's fused ReLU maps NaN to 0 (optimize/convs.py); the
            weight prepacked for the input shape where the input is
            channels_last (oneDNN's blocked layout depends on the problem
            size: a weight packed without it costs tens of times more)
    cudnn   cuDNN's fused convolution + bias + ReLU, chosen only where its
            ReLU keeps NaN (optimize.convs.cudnn_relu_keeps_nan); the aten
            form where cuDNN has no fused engine for the call

Example:
    >>> import torch
    >>> from hrnet_fast.plan.engines import run_conv
    >>> x, w, b = torch.randn(1, 4, 9, 9), torch.randn(6, 4, 3, 3), torch.randn(6)
    >>> y = run_conv("aten", x, w, b, (2, 2), (1, 1), (1, 1), 1, relu=True)
    >>> torch.equal(y, torch.relu(torch.nn.functional.conv2d(x, w, b, 2, 1)))
    True
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..pointwise import conv1x1


def prepack(weight: Tensor, padding: Sequence[int], stride: Sequence[int], dilation: Sequence[int], groups: int,
            input_shape: Sequence[int]) -> Tensor:
    """`weight` in oneDNN's blocked layout for inputs of `input_shape`."""
    return torch.ops.mkldnn._reorder_convolution_weight(weight, list(padding), list(stride), list(dilation),
                                                         groups, list(input_shape))


def run_conv(engine: str, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation,
             groups: int, relu: bool = False) -> Tensor:
    """conv2d(x, weight, bias) [then ReLU] by `engine`."""
    if engine == "mkldnn":
        y = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation, groups, "none", [],
                                                     "")
        return y.relu_() if relu else y
    if engine == "cudnn" and relu and bias is not None:
        try:
            return torch.cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups)
        except RuntimeError:
            if torch.cuda.is_current_stream_capturing():
                raise
    if engine == "gemm":
        y = conv1x1(x, weight, bias)
    else:
        y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return y.relu_() if relu else y


__all__ = ["prepack", "run_conv"]
