"""The summands of one exchange row, compiled once by `convert` from a
module's fuse layers (hrnet_fast.layouts), each knowing how to produce its
contribution to the row's `hrnet_fast.exchange` call.

    IdentityTerm  x_i itself
    UpTerm        j > i: 1x1 conv -> BN [-> upsample]; the op resizes
    DownTerm      j < i: a chain of stride-2 3x3 conv -> BN [-> ReLU] links
    OpaqueTerm    anything else: the layer runs as a module, its output
                  joins the sum (resized by the op where the host resizes)

A term reads its layers from the host module on every call (it holds the
modules, never their tensors), so state_dict, .to(), load_state_dict,
SyncBatchNorm conversion and optimizer steps all see through it. In eval
(running statistics) each BN is folded into its conv through the module's
one FoldCache; with batch statistics the BN runs as a module, or with
`batch_stats_in_op` its affine goes to the op. A term whose modules carry
forward hooks runs them as modules, so the hooks fire and see what they saw
unconverted.

This module knows nothing of the op's backends: a row hands its inputs,
affines and conv terms to `hrnet_fast.exchange` and lets it choose.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .folding import FoldCache, batch_affine
from .layers import has_hooks, plain_batchnorm, uses_batch_stats
from .pointwise import conv1x1

ConvTerm = Tuple[Tensor, Tensor, Optional[Tensor]]


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


class CallState:
    """What every term of one forward call shares: the fold cache, the
    settings of the host's FusedExchange, and the calls' ambient modes read
    once."""
    __slots__ = ("folds", "batch_stats_in_op", "autocast", "convs_in_op", "first", "cacheable")

    def __init__(self, folds: FoldCache, batch_stats_in_op: bool, autocast: bool, convs_in_op: bool,
                 first: Dict[Tuple[int, int], Tensor], cacheable: bool):
        self.folds = folds
        self.batch_stats_in_op = batch_stats_in_op
        self.autocast = autocast
        self.convs_in_op = convs_in_op
        self.first = first
        self.cacheable = cacheable


def size_mismatch(expected: Sequence[int], got: Sequence[int]) -> RuntimeError:
    """The error the unconverted module raises in `y + t` for a summand of
    the wrong size."""
    for dim, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return RuntimeError(f"The size of tensor a ({a}) must match the size of tensor b ({b}) at "
                                f"non-singleton dimension {dim + 2}")
    return RuntimeError("size mismatch in the HRNet exchange")


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

    def contribute(self, x: Tensor, target: Tuple[int, int], st: CallState, out: RowArgs) -> None:
        raise NotImplementedError  # pragma: no cover

    def __repr__(self) -> str:
        return f"{type(self).__name__}(i={self.i}, j={self.j})"


class IdentityTerm(Term):
    kind = "id"
    __slots__ = ()

    def contribute(self, x, target, st, out):
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

    def contribute(self, x, target, st, out):
        t = self.layer(x)
        if not self.host_resizes and tuple(t.shape[-2:]) != target:
            raise size_mismatch(target, t.shape[-2:])
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

    def contribute(self, x, target, st, out):
        if self.hooked():
            return self.opaque.contribute(x, target, st, out)
        merged = st.first.get((self.i, self.j))
        z, scale, shift = (merged, None, None) if merged is not None else self.conv_bn(x, st)
        up = self.upsample
        if up is not None:
            size = up.output_size(z.shape[-2], z.shape[-1])
            if size != target:
                if not self.host_resizes:
                    raise size_mismatch(target, size)
                # The layer upsamples to one size and the host resizes to
                # another (mmseg at odd sizes, 26 -> 25): two resamplings,
                # run as the source does; the op does the second.
                if scale is not None:
                    z = z * scale.to(z.dtype).view(1, -1, 1, 1) + shift.to(z.dtype).view(1, -1, 1, 1)
                out.add(up.module(z))
                return
        out.add(z, scale, shift)


class DownTerm(Term):
    """A chain of stride-2 conv -> BN [-> ReLU] links from a finer branch.
    In eval every link is folded; the earlier links apply ReLU in place and
    the last conv goes to the op as a conv term (`in_kernel`: a plain 3x3,
    stride 2, padding 1 conv) or runs with its folded bias."""
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

    def contribute(self, x, target, st, out):
        layer = self.layer
        if layer._forward_hooks or layer._forward_pre_hooks:
            return self.opaque.contribute(x, target, st, out)
        links = self.links
        merged = st.first.get((self.i, self.j))
        if merged is not None and len(links) == 1:  # the chain's only conv, already folded
            if tuple(merged.shape[-2:]) != target:
                raise size_mismatch(target, merged.shape[-2:])
            out.add(merged)
            return
        a = x if merged is None else merged
        for k in range(0 if merged is None else 1, len(links) - 1):
            a = self._link(k, a, st)
        last, conv, bn, parts = links[-1]
        if has_hooks(last, *parts):
            z = last(a)
        elif uses_batch_stats(bn):
            z = conv(a)
            if st.batch_stats_in_op and plain_batchnorm(bn):
                scale, shift = batch_affine(bn, z)
                if tuple(z.shape[-2:]) != target:
                    raise size_mismatch(target, z.shape[-2:])
                out.add(z, scale, shift)
                return
            z = bn(z)
        else:
            dtype = conv.weight.dtype if st.autocast else a.dtype
            weight, bias = st.folds.get((self.i, self.j), conv, bn, dtype, st.cacheable)
            if self.in_kernel and st.convs_in_op and not st.autocast:
                landed = ((a.shape[-2] - 1) // 2 + 1, (a.shape[-1] - 1) // 2 + 1)
                if landed != target:
                    raise size_mismatch(target, landed)
                out.convs.append((a, weight, bias))
                return
            z = F.conv2d(a, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if tuple(z.shape[-2:]) != target:
            raise size_mismatch(target, z.shape[-2:])
        out.add(z)


TermFactory = Callable[..., Term]
