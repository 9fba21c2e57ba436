"""One folded convolution with its epilogue, as the platform runs it best.

    y = act( conv2d(x, weight, bias) [+ other] )      act: ReLU or nothing

`Epilogue` says what follows the convolution; `make_conv` builds the module
that computes the whole expression for the chosen `Platform`:

    mkldnn  CPU: oneDNN convolution with a weight prepacked (blocked) for
            each input shape, the bias and the residual add as a post-op:
            the calls Inductor emits with freezing
            (torch.ops.mkldnn._convolution_pointwise and its binary form;
            the in-place binary form writes into `other` where the graph
            says `other` is dead afterwards); then the ReLU, in place.
    cudnn   CUDA: torch.cudnn_convolution_relu / cudnn_convolution_add_relu
            (conv + bias + [residual] + ReLU in one cuDNN call) where that
            ReLU keeps NaN, else the plain form below. A convolution cuDNN
            has no fused engine for falls back, once and for good, to the
            plain form.
    plain   anywhere: F.conv2d with the folded bias, then the add and the
            ReLU in place on its fresh output.

NaN: a library's fused ReLU may map NaN to 0, and a NaN that eager carries
to the output would then vanish into a finite answer. oneDNN's JIT kernels
do (their ReLU is the x86 max, which returns its second operand when one is
NaN; which kernel oneDNN picks depends on the shape and the CPU, so no one
probe can speak for all of them): on the mkldnn platform the library call
takes the bias and the residual add, and the ReLU runs after it as torch's
relu_, in place (NaN stays NaN). PyTorch asks cuDNN not to propagate NaN: the fused cuDNN call
is used only where a probe with a NaN input shows that it does
(`cudnn_relu_keeps_nan`). `library_relu = True` on an instance puts the
ReLU into the library call anyway, to measure what keeping NaN costs
(benchmarks/RESULTS.md, "NaN through optimize").

Traces, exports and torch.compile record the plain form on every platform
(`recording()`): the fused library calls are not standard operators, and
a prepacked weight is only valid for the process that packed it.

The weights are the module's own tensors (folded, cast and laid out once at
build time), held as plain attributes: the optimized model is fixed to one
device and dtype, and nothing here is trained.
"""
from __future__ import annotations

import enum
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class Epilogue(enum.Enum):
    NONE = "none"
    RELU = "relu"
    ADD = "add"
    ADD_RELU = "add_relu"

    @property
    def adds(self) -> bool:
        return self in (Epilogue.ADD, Epilogue.ADD_RELU)

    @property
    def relu(self) -> bool:
        return self in (Epilogue.RELU, Epilogue.ADD_RELU)


class Platform(enum.Enum):
    MKLDNN = "mkldnn"
    CUDNN = "cudnn"
    PLAIN = "plain"


def recording() -> bool:
    """Whether a trace, an export or torch.compile records this call now."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _pair(v: Union[int, Sequence[int]]) -> List[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]


def conv_out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class FusedConv(nn.Module):
    """conv2d(x, weight, bias) with `epilogue`; forward(x[, other]).

    `weight` (C_out, C_in / groups, kh, kw) and `bias` (C_out) or None are
    taken as given: already folded, in the compute dtype, on the device.
    """
    platform = Platform.PLAIN
    # Whether the ReLU runs inside the library call (see NaN above); the
    # plain form has none.
    library_relu = False

    def __init__(self, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups: int,
                 epilogue: Epilogue = Epilogue.NONE, channels_last: bool = False):
        super().__init__()
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        # A string padding ("same", "valid") stays a string: only the plain
        # form takes it.
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.groups = int(groups)
        self.epilogue = epilogue
        self.out_channels = int(weight.shape[0])
        self.kernel = (int(weight.shape[2]), int(weight.shape[3]))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = weight.contiguous(memory_format=fmt)
        self.bias = bias
        # The in-place binary form may overwrite `other` (set by the graph
        # rewrite where `other` is dead after this call).
        self.inplace = False

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.out_channels}, kernel={self.kernel}, "
                f"stride={tuple(self.stride)}, padding={self.padding}, groups={self.groups}, "
                f"epilogue={self.epilogue.value}, platform={self.platform.value}"
                + (", inplace" if self.inplace else ""))

    def other_fits(self, x: Tensor, other: Tensor) -> bool:
        """Whether `other` has exactly the conv output's shape (the fused
        forms do not broadcast)."""
        if other.dim() != 4 or x.dim() != 4 or isinstance(self.padding, str):
            return False
        oh = conv_out_size(x.shape[2], self.kernel[0], self.stride[0], self.padding[0], self.dilation[0])
        ow = conv_out_size(x.shape[3], self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])
        return tuple(other.shape) == (x.shape[0], self.out_channels, oh, ow) and other.dtype == x.dtype

    def plain(self, x: Tensor, other: Optional[Tensor] = None) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        ep = self.epilogue
        if ep.adds:
            # y is this call's own fresh tensor: add and ReLU in place, one
            # pass each, no allocation. Broadcasting as the unfused `y + other`.
            y = y.add_(other) if y.shape == torch.broadcast_shapes(y.shape, other.shape) else y + other
        if ep.relu:
            y = y.relu_()
        return y

    def forward(self, x: Tensor, other: Optional[Tensor] = None) -> Tensor:
        return self.plain(x, other)


class MkldnnConv(FusedConv):
    """oneDNN's fused convolution. With channels_last the weight is
    prepacked into oneDNN's blocked layout for each input shape it meets
    (its first call at that shape): the layout oneDNN picks depends on the
    problem size, and a weight packed without the size can cost tens of
    times more per call (a 256->256 3x3 stride-2 conv at 8x6 pixels, one
    AVX2 thread: 0.6 ms packed for its size, 128 ms packed without one,
    2.0 ms as F.conv2d). At most `MAX_SHAPES` packings are kept per conv;
    further shapes run with the dense weight."""
    platform = Platform.MKLDNN
    MAX_SHAPES = 8

    def __init__(self, weight, bias, stride, padding, dilation, groups, epilogue=Epilogue.NONE,
                 channels_last=True):
        super().__init__(weight, bias, stride, padding, dilation, groups, epilogue, False)
        self.packs = {} if channels_last else None

    def packed(self, x: Tensor) -> Tensor:
        """The weight for input `x`: packed for its shape where it can be."""
        packs = self.packs
        if packs is None:
            return self.weight
        key = (x.shape[0], x.shape[2], x.shape[3])
        w = packs.get(key)
        if w is None:
            if len(packs) >= self.MAX_SHAPES or x.dim() != 4:
                return self.weight
            w = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape))
            packs[key] = w
        return w

    def plain(self, x, other=None):
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.epilogue.adds:
            y = y + other
        return y.relu_() if self.epilogue.relu else y

    def forward(self, x: Tensor, other: Optional[Tensor] = None) -> Tensor:
        if recording():
            return FusedConv.plain(self, x, other)
        w = self.packed(x)
        if other is not None and not self.other_fits(x, other):
            return self.plain(x, other)
        in_library = self.epilogue.relu and self.library_relu
        if other is None:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, w, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "relu" if in_library else "none", [], "")
        elif self.inplace:
            y = torch.ops.mkldnn._convolution_pointwise_.binary(
                other, x, w, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "add", 1.0, "relu" if in_library else None, [], "")
        else:
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, w, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "add", 1.0, "relu" if in_library else None, [], "")
        # The output is this call's own (or `other`, dead after it): in place.
        return y.relu_() if self.epilogue.relu and not in_library else y


# (device, dtype, the two fused functions) -> whether their ReLU keeps NaN.
_CUDNN_KEEPS_NAN: Dict[tuple, bool] = {}


def cudnn_relu_keeps_nan(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch.cudnn_convolution_relu and cudnn_convolution_add_relu
    give NaN where their pre-activation is NaN, as eager's ReLU does: asked
    once per device and dtype with a NaN input, since the answer is the
    library's (PyTorch asks cuDNN for CUDNN_NOT_PROPAGATE_NAN: NaN -> 0)."""
    relu, add_relu = torch.cudnn_convolution_relu, torch.cudnn_convolution_add_relu
    key = (str(device), dtype, relu, add_relu)
    hit = _CUDNN_KEEPS_NAN.get(key)
    if hit is None:
        x = torch.full((1, 8, 6, 6), float("nan"), device=device, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        w = torch.ones(8, 8, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        b = torch.zeros(8, device=device, dtype=dtype)
        try:
            hit = bool(relu(x, w, b, [1, 1], [1, 1], [1, 1], 1).isnan().all()) and bool(
                add_relu(x, w, torch.zeros_like(x), 1.0, b, [1, 1], [1, 1], [1, 1], 1).isnan().all())
        except RuntimeError:  # no fused engine at all: the plain form runs anyway
            hit = False
        _CUDNN_KEEPS_NAN[key] = hit
    return hit


class CudnnConv(FusedConv):
    """cuDNN's fused conv + bias [+ z] + ReLU where its ReLU keeps NaN
    (`cudnn_relu_keeps_nan`); otherwise, and without a ReLU (there is no
    fused cuDNN call then), the plain form: F.conv2d, add and ReLU in
    place."""
    platform = Platform.CUDNN

    def __init__(self, weight, bias, stride, padding, dilation, groups, epilogue=Epilogue.NONE,
                 channels_last=True):
        super().__init__(weight, bias, stride, padding, dilation, groups, epilogue, channels_last)
        if self.bias is None and epilogue.relu:
            self.bias = torch.zeros(self.out_channels, dtype=weight.dtype, device=weight.device)
        self.library_relu = epilogue.relu and cudnn_relu_keeps_nan(weight.device, weight.dtype)
        # Set on the first call cuDNN cannot run fused (no engine for this
        # shape / dtype): the plain form from then on.
        self.fallback: Optional[str] = None

    def forward(self, x: Tensor, other: Optional[Tensor] = None) -> Tensor:
        ep = self.epilogue
        if not (ep.relu and self.library_relu) or self.fallback is not None or isinstance(self.padding, str) \
                or recording():
            return self.plain(x, other)
        try:
            if other is None:
                return torch.cudnn_convolution_relu(x, self.weight, self.bias, self.stride, self.padding,
                                                    self.dilation, self.groups)
            if not self.other_fits(x, other):
                return self.plain(x, other)
            return torch.cudnn_convolution_add_relu(x, self.weight, other, 1.0, self.bias, self.stride,
                                                    self.padding, self.dilation, self.groups)
        except RuntimeError as exc:
            if torch.cuda.is_current_stream_capturing():
                raise
            self.fallback = str(exc).splitlines()[0][:200]
            return self.plain(x, other)


_CLASSES = {Platform.MKLDNN: MkldnnConv, Platform.CUDNN: CudnnConv, Platform.PLAIN: FusedConv}


def make_conv(platform: Platform, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups: int,
              epilogue: Epilogue, channels_last: bool) -> FusedConv:
    """The FusedConv for `platform`; string paddings and oneDNN-unsupported
    cases take the plain form."""
    cls = _CLASSES[platform]
    if platform is Platform.MKLDNN and isinstance(padding, str):
        cls = FusedConv
    return cls(weight, bias, stride, padding, dilation, groups, epilogue, channels_last)


def fused_convs(module: nn.Module) -> List[FusedConv]:
    return [m for m in module.modules() if isinstance(m, FusedConv)]


def conv_params(conv: nn.Conv2d) -> Tuple:
    """(stride, padding, dilation, groups) of an nn.Conv2d."""
    return conv.stride, conv.padding, conv.dilation, conv.groups
