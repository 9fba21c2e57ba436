"""The summands of one exchange row, read once by `convert` from a module's
fuse layers (hrnet_fast.convert.layouts), each knowing how to produce its
contribution to the row's `hrnet_fast.exchange` call.

    IdentityTerm  x_i itself
    UpTerm        j > i: 1x1 conv -> BN [-> upsample]; the op resizes
    DownTerm      j < i: a chain of stride-2 3x3 conv -> BN [-> ReLU] links
    OpaqueTerm    anything else: the layer runs as a module, its output
                  joins the sum (resized by the op where the host resizes)

Terms are the general path of a converted module (training, grad mode,
autocast, traces, hooks) and what the eval program is compiled from
(hrnet_fast.plan.compiler, which reads their `kind` and layers). A term
reads its layers from the host module on every call (it holds the modules,
never their tensors), so state_dict, .to(), load_state_dict, SyncBatchNorm
conversion and optimizer steps all see through it. With running statistics
each BN is folded into its conv through the module's one FoldCache; with
batch statistics the BN runs as a module, or with `batch_stats_in_op` its
affine goes to the op. A term whose modules carry forward hooks runs them
as modules, so the hooks fire and see what they saw unconverted.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..contract import landed_size
from ..plan.program import summand_mismatch
from ..pointwise import conv1x1
from .folding import FoldCache, batch_affine
from .layers import has_hooks, plain_batchnorm, uses_batch_stats

ConvTerm = Tuple[Tensor, Tensor, Optional[Tensor]]
Shape = Sequence[int]


def _plain(conv: nn.Module) -> bool:
    """A convolution the eval program can state (integer padding)."""
    return all(isinstance(v, int) for v in conv.padding)


class RowArgs:
    """What one row's terms contribute: op inputs with their affines, and
    conv terms."""
    __slots__ = ("inputs", "scales", "shifts", "convs", "affine")

    def __init__(self) -> None:
        self.inputs: List[Tensor] = []
        self.scales: List[Optional[Tensor]] = []
        self.shifts: List[Optional[Tensor]] = []
        self.convs: List[ConvTerm] = []
        self.affine = False

    def add(self, t: Tensor, scale: Optional[Tensor] = None, shift: Optional[Tensor] = None) -> None:
        self.inputs.append(t)
        self.scales.append(scale)
        self.shifts.append(shift)
        if scale is not None or shift is not None:
            self.affine = True

    def promote(self) -> None:
        """Casts every summand to their promoted dtype, as the unconverted
        sum promotes (e.g. float32 + bfloat16 under autocast); the op wants
        one dtype."""
        dtype = self.inputs[0].dtype
        for t in self.inputs:
            dtype = torch.promote_types(dtype, t.dtype)
        for a, _, _ in self.convs:
            dtype = torch.promote_types(dtype, a.dtype)
        self.inputs = [t if t.dtype == dtype else t.to(dtype) for t in self.inputs]
        self.convs = [(a, w, b) if a.dtype == dtype else (a.to(dtype), w.to(dtype), None if b is None else b.to(dtype))
                      for a, w, b in self.convs]


class CallState:
    """What every term of one forward call shares: the fold cache, the
    settings of the host's FusedExchange, and the call's ambient modes read
    once."""
    __slots__ = ("folds", "batch_stats_in_op", "autocast", "convs_in_op", "cacheable", "where")

    def __init__(self, folds: FoldCache, batch_stats_in_op: bool, autocast: bool, convs_in_op: bool,
                 cacheable: bool, where: str):
        self.folds = folds
        self.batch_stats_in_op = batch_stats_in_op
        self.autocast = autocast
        self.convs_in_op = convs_in_op
        self.cacheable = cacheable
        self.where = where


class Upsample:
    """What a fuse layer's upsampling module computes, as the op can do it:
    F.interpolate to a size given by `size` or by floor(h * scale_factor)
    (nn.Upsample, mmseg's Upsample), with `mode` / `align_corners`."""
    __slots__ = ("module", "size", "scale", "mode", "align_corners")

    def __init__(self, module: nn.Module, size, scale, mode: str, align_corners: bool):
        self.module = module
        self.size = size
        self.scale = scale
        self.mode = mode
        self.align_corners = align_corners

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.size is not None:
            return int(self.size[0]), int(self.size[1])
        return int(math.floor(h * self.scale[0])), int(math.floor(w * self.scale[1]))


class Term:
    """One summand of row i: input branch j. `modules` are every module the
    term runs (for hook checks)."""
    kind = "?"
    __slots__ = ("i", "j", "layer", "modules")

    def __init__(self, i: int, j: int, layer: Optional[nn.Module]):
        self.i, self.j, self.layer = i, j, layer
        self.modules: Tuple[nn.Module, ...] = tuple(layer.modules()) if layer is not None else ()

    def hooked(self) -> bool:
        return has_hooks(*self.modules)

    def foldable(self) -> bool:
        """Whether every BN of this summand has running statistics now (and
        every conv a geometry the eval program can state), so that the
        summand is a fixed chain of calls on folded weights
        (hrnet_fast.plan.compiler)."""
        return True

    def check(self, shape: Shape, like: Tensor, st: CallState, spatial: bool = True) -> None:
        """Raises summand_mismatch unless a summand of `shape` has the row's
        batch and channels (and, with `spatial`, its size)."""
        n = 4 if spatial else 2
        if len(shape) != 4 or tuple(shape[:n]) != tuple(like.shape[:n]):
            raise summand_mismatch(st.where, self.i, self.j, like.shape, shape)

    def contribute(self, x: Tensor, like: Tensor, st: CallState, out: RowArgs) -> None:
        """Adds this summand of the row whose identity input is `like`."""
        raise NotImplementedError  # pragma: no cover

    def __repr__(self) -> str:
        return f"{type(self).__name__}(i={self.i}, j={self.j})"


class IdentityTerm(Term):
    kind = "id"
    __slots__ = ()

    def contribute(self, x, like, st, out):
        out.add(x)


class OpaqueTerm(Term):
    """Runs the layer as a module. `host_resizes`: the host resizes this
    summand to the row's size in its forward (so the op does too); else its
    output must already have that size."""
    kind = "opaque"
    __slots__ = ("host_resizes",)

    def __init__(self, i: int, j: int, layer: nn.Module, host_resizes: bool):
        super().__init__(i, j, layer)
        self.host_resizes = host_resizes

    def contribute(self, x, like, st, out):
        t = self.layer(x)
        self.check(t.shape, like, st, spatial=not self.host_resizes)
        out.add(t)


class UpTerm(Term):
    """conv (1x1 in HRNet) -> BN [-> upsample] of a coarser branch; the op
    applies the BN's affine (or the fold's bias) and resizes.
    `pointwise`: a plain 1x1 conv, run as a GEMM on the CPU."""
    kind = "up"
    __slots__ = ("conv", "bn", "upsample", "host_resizes", "pointwise", "opaque")

    def __init__(self, i: int, j: int, layer: nn.Module, upsample: Optional[Upsample], host_resizes: bool):
        super().__init__(i, j, layer)
        self.conv, self.bn = layer[0], layer[1]
        self.upsample = upsample
        self.host_resizes = host_resizes
        c = self.conv
        self.pointwise = (c.kernel_size == (1, 1) and c.stride == (1, 1) and c.padding == (0, 0)
                          and c.dilation == (1, 1) and c.groups == 1)
        self.opaque = OpaqueTerm(i, j, layer, host_resizes)

    def foldable(self) -> bool:
        return not uses_batch_stats(self.bn) and _plain(self.conv)

    def landing(self, h: int, w: int) -> Tuple[int, int]:
        """The size an (h, w) conv output has after the layer's own
        upsampling (itself when the layer has none)."""
        return (h, w) if self.upsample is None else self.upsample.output_size(h, w)

    def conv_bn(self, x: Tensor, st: CallState) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """(z, scale, shift) with BN(conv(x)) == z * scale + shift."""
        conv, bn = self.conv, self.bn
        if uses_batch_stats(bn):
            z = conv1x1(x, conv.weight, conv.bias) if self.pointwise else conv(x)
            if st.batch_stats_in_op and plain_batchnorm(bn):
                return (z, *batch_affine(bn, z))
            return bn(z), None, None
        dtype = conv.weight.dtype if st.autocast else x.dtype
        weight, bias = st.folds.get((self.i, self.j), conv, bn, dtype, st.cacheable)
        if self.pointwise:
            return conv1x1(x, weight, bias), None, None
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups), None, None

    def contribute(self, x, like, st, out):
        if self.hooked():
            return self.opaque.contribute(x, like, st, out)
        z, scale, shift = self.conv_bn(x, st)
        size = self.landing(z.shape[-2], z.shape[-1])
        if size != (like.shape[-2], like.shape[-1]):
            if not self.host_resizes:
                self.check((*z.shape[:2], *size), like, st)
            if self.upsample is not None:
                # The layer upsamples to one size and the host resizes to
                # another (mmseg at odd sizes, 26 -> 25): two resamplings, run
                # as the source runs them; the op does the second.
                if scale is not None:
                    z = z * scale.to(z.dtype).view(1, -1, 1, 1) + shift.to(z.dtype).view(1, -1, 1, 1)
                z, scale, shift = self.upsample.module(z), None, None
        self.check(z.shape, like, st, spatial=False)
        out.add(z, scale, shift)


class DownTerm(Term):
    """A chain of stride-2 conv -> BN [-> ReLU] links from a finer branch.
    With running statistics every link is folded; the earlier links apply
    ReLU in place and the last conv goes to the op as a conv term
    (`in_kernel`: a plain 3x3, stride 2, padding 1 conv) or runs with its
    folded bias."""
    kind = "down"
    __slots__ = ("links", "in_kernel", "opaque")

    def __init__(self, i: int, j: int, layer: nn.Module):
        super().__init__(i, j, layer)
        # (link, conv, BN, the link's modules) per link, looked up once:
        # indexing an nn.Sequential costs a microsecond per call.
        self.links = [(link, link[0], link[1], tuple(link)) for link in layer]
        c = self.links[-1][1]
        self.in_kernel = (c.kernel_size == (3, 3) and c.stride == (2, 2) and c.padding == (1, 1)
                          and c.dilation == (1, 1) and c.groups == 1)
        self.opaque = OpaqueTerm(i, j, layer, False)

    def foldable(self) -> bool:
        return all(not uses_batch_stats(bn) and _plain(conv) for _, conv, bn, _ in self.links)

    def _link(self, k: int, a: Tensor, st: CallState) -> Tensor:
        """An earlier link conv -> BN -> ReLU: with running statistics one
        folded conv and an in-place ReLU (one pass over its output instead
        of three); with batch statistics or hooks, the link as a module."""
        link, conv, bn, parts = self.links[k]
        if uses_batch_stats(bn) or has_hooks(link, *parts):
            return link(a)
        dtype = conv.weight.dtype if st.autocast else a.dtype
        weight, bias = st.folds.get((self.i, self.j, k), conv, bn, dtype, st.cacheable)
        return F.relu(F.conv2d(a, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups),
                      inplace=True)

    def contribute(self, x, like, st, out):
        layer = self.layer
        if layer._forward_hooks or layer._forward_pre_hooks:
            return self.opaque.contribute(x, like, st, out)
        links = self.links
        a = x
        for k in range(len(links) - 1):
            a = self._link(k, a, st)
        last, conv, bn, parts = links[-1]
        if has_hooks(last, *parts):
            z = last(a)
        elif uses_batch_stats(bn):
            z = conv(a)
            if st.batch_stats_in_op and plain_batchnorm(bn):
                scale, shift = batch_affine(bn, z)
                self.check(z.shape, like, st)
                out.add(z, scale, shift)
                return
            z = bn(z)
        else:
            dtype = conv.weight.dtype if st.autocast else a.dtype
            weight, bias = st.folds.get((self.i, self.j), conv, bn, dtype, st.cacheable)
            if self.in_kernel and st.convs_in_op and not st.autocast:
                self.check((a.shape[0], weight.shape[0], *landed_size(a.shape)), like, st)
                out.convs.append((a, weight, bias))
                return
            z = F.conv2d(a, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        self.check(z.shape, like, st)
        out.add(z)
