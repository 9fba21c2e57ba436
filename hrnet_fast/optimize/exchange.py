"""An HRNet module for inference: its branches as built by the Builder, its
exchange as one `hrnet_fast.exchange` call per output branch with every
fuse layer folded ahead of time.

The fuse layers are read by hrnet_fast.layouts.compile_rows, the same reader
`convert` uses, so both agree on what a layout means (nearest or bilinear,
align_corners, where the host resizes). Each summand of output row i is
built once:

    identity   x_i
    up         folded 1x1 conv of x_j; the op resizes (and, where the layer
               upsamples to another size than the host resizes to, as mmseg
               does at odd sizes, the layer's own upsampling runs first)
    down       the chain's links as folded convs with a fused ReLU; the last
               link's conv joins the op as a conv term where the backend
               computes conv terms itself, else as an input
    opaque     anything else (or anything with hooks): the layer as the
               Builder builds it, its output joins the sum

With oneDNN a folded conv carries its bias (added in the same pass);
elsewhere the bias goes to the op as the input's shift, which the op
applies while it reads the input: cuDNN's plain convolution would add it in
a separate pass.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..backend import conv_terms_in_kernel
from ..contract import affine_dtype
from ..folding import fold
from ..layers import has_hooks
from ..layouts import OwnModule, compile_rows
from ..ops import exchange
from ..terms import DownTerm, IdentityTerm, OpaqueTerm, UpTerm, size_mismatch
from .convs import Epilogue, FusedConv, Platform
from .foldable import foldable_bn_reason


class _Row:
    __slots__ = ("inputs", "shifts", "convs", "shifted")

    def __init__(self) -> None:
        self.inputs: List[Tensor] = []
        self.shifts: List[Optional[Tensor]] = []
        self.convs: List[Tuple[Tensor, Tensor, Optional[Tensor]]] = []
        self.shifted = False

    def add(self, t: Tensor, shift: Optional[Tensor] = None) -> None:
        self.inputs.append(t)
        self.shifts.append(shift)
        if shift is not None:
            self.shifted = True


class _Identity:
    __slots__ = ("j",)

    def __init__(self, j: int):
        self.j = j

    def contribute(self, xs, target, row: _Row) -> None:
        row.add(xs[self.j])


class _Opaque:
    __slots__ = ("j", "module", "host_resizes")

    def __init__(self, j: int, module: nn.Module, host_resizes: bool):
        self.j, self.module, self.host_resizes = j, module, host_resizes

    def contribute(self, xs, target, row: _Row) -> None:
        t = self.module(xs[self.j])
        if not self.host_resizes and tuple(t.shape[-2:]) != target:
            raise size_mismatch(target, t.shape[-2:])
        row.add(t)


class _Up:
    __slots__ = ("j", "conv", "shift", "upsample", "host_resizes")

    def __init__(self, j: int, conv: FusedConv, shift: Optional[Tensor], upsample, host_resizes: bool):
        self.j, self.conv, self.shift, self.upsample, self.host_resizes = j, conv, shift, upsample, host_resizes

    def contribute(self, xs, target, row: _Row) -> None:
        z = self.conv(xs[self.j])
        up = self.upsample
        if up is not None:
            size = up.output_size(z.shape[-2], z.shape[-1])
            if size != target:
                if not self.host_resizes:
                    raise size_mismatch(target, size)
                # Two resamplings, as the source does; the op does the second.
                if self.shift is not None:
                    z = z + self.shift.to(z.dtype).view(1, -1, 1, 1)
                row.add(up.module(z))
                return
        row.add(z, self.shift)


class _Down:
    __slots__ = ("j", "links", "last", "shift", "term")

    def __init__(self, j: int, links: List[FusedConv], last: Optional[FusedConv], shift: Optional[Tensor],
                 term: Optional[Tuple[Tensor, Tensor]]):
        self.j, self.links, self.last, self.shift, self.term = j, links, last, shift, term

    def contribute(self, xs, target, row: _Row) -> None:
        a = xs[self.j]
        for link in self.links:
            a = link(a)
        if self.term is not None:
            landed = ((a.shape[-2] - 1) // 2 + 1, (a.shape[-1] - 1) // 2 + 1)
            if landed != target:
                raise size_mismatch(target, landed)
            row.convs.append((a, self.term[0], self.term[1]))
            return
        z = self.last(a)
        if tuple(z.shape[-2:]) != target:
            raise size_mismatch(target, z.shape[-2:])
        row.add(z, self.shift)


class OptimizedHRModule(nn.Module):
    """An HRNet module (branches + exchange) for inference; forward takes
    and returns lists of branch tensors as the source module does."""

    def __init__(self, host: nn.Module, builder, name: str = ""):
        super().__init__()
        rows, (mode, align_corners) = compile_rows(host)  # ValueError: the Builder runs the host as it is
        s = builder.settings
        self.mode, self.align_corners = mode, bool(align_corners) and mode == "bilinear"
        self.backend = s.backend
        # timm and the official repositories write the branch outputs back
        # into the caller's list; keep that visible behaviour.
        self.write_back = not isinstance(host, OwnModule)
        prefix = f"{name}." if name else ""
        self.branches = nn.ModuleList(builder.build(b, f"{prefix}branches.{k}") for k, b in enumerate(host.branches))
        self.parts = nn.ModuleList()  # every conv and module the rows run, for repr and counting
        self._bias_in_conv = s.platform is Platform.MKLDNN
        self._in_kernel = conv_terms_in_kernel(s.backend, s.device.type)
        self._shift_dtype = affine_dtype(s.dtype)
        self._builder = builder
        self.rows = [[self._item(t, builder, f"{prefix}fuse_layers.{t.i}.{t.j}") for t in terms] for terms in rows]
        del self._builder
        builder.report.exchange_modules += 1
        builder.report.exchange_rows += len(self.rows)

    # -- build -------------------------------------------------------------

    def _split_bias(self, bias: Tensor):
        """(bias kept in the conv, shift for the op)."""
        if self._bias_in_conv:
            return bias, None
        return None, bias.detach().to(device=self._builder.settings.device, dtype=self._shift_dtype)

    def _folded(self, conv, bn, epilogue: Epilogue, last: bool):
        w, b = fold(conv, bn, torch.promote_types(conv.weight.dtype, torch.float32))
        builder = self._builder
        builder.report.bns_folded += 1
        builder.report.convs += 1
        if epilogue is not Epilogue.NONE:
            builder.report.epilogues[epilogue.value] = builder.report.epilogues.get(epilogue.value, 0) + 1
        kept, shift = self._split_bias(b) if last else (b, None)
        fused = builder.conv(conv, w, kept, epilogue)
        self.parts.append(fused)
        return fused, shift

    def _opaque(self, term, builder, name, host_resizes):
        module = builder.build(term.layer, name)
        self.parts.append(module)
        builder.report.opaque_terms += 1
        return _Opaque(term.j, module, host_resizes)

    def _item(self, term, builder, name):
        if isinstance(term, IdentityTerm):
            return _Identity(term.j)
        if isinstance(term, OpaqueTerm):
            return self._opaque(term, builder, name, term.host_resizes)
        if has_hooks(*term.modules):
            return self._opaque(term, builder, name, getattr(term, "host_resizes", False))
        if isinstance(term, UpTerm):
            if foldable_bn_reason(term.bn) is not None:
                return self._opaque(term, builder, name, term.host_resizes)
            conv, shift = self._folded(term.conv, term.bn, Epilogue.NONE, last=True)
            return _Up(term.j, conv, shift, term.upsample, term.host_resizes)
        if isinstance(term, DownTerm):
            # term.links: (link, conv, BN, the link's modules) per link
            if any(foldable_bn_reason(bn) is not None for _, _, bn, _ in term.links):
                return self._opaque(term, builder, name, False)
            links = [self._folded(conv, bn, Epilogue.RELU, last=False)[0] for _, conv, bn, _ in term.links[:-1]]
            _, last_conv, last_bn, _ = term.links[-1]
            if self._in_kernel and term.in_kernel:
                # The backend computes this conv inside the exchange kernel:
                # it takes the dense folded weight and its bias as they are.
                s = builder.settings
                w, b = fold(last_conv, last_bn, torch.promote_types(last_conv.weight.dtype, torch.float32))
                builder.report.bns_folded += 1
                builder.report.convs += 1
                term_wb = (w.detach().to(device=s.device, dtype=s.dtype).contiguous(),
                           b.detach().to(device=s.device, dtype=self._shift_dtype))
                return _Down(term.j, links, None, None, term_wb)
            last, shift = self._folded(last_conv, last_bn, Epilogue.NONE, last=True)
            return _Down(term.j, links, last, shift, None)
        return self._opaque(term, builder, name, False)  # pragma: no cover - every term kind is above

    # -- run ---------------------------------------------------------------

    def extra_repr(self) -> str:
        return f"rows={len(self.rows)}, mode={self.mode!r}, align_corners={self.align_corners}, " \
               f"backend={self.backend!r}"

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        if self.write_back:
            for i, branch in enumerate(self.branches):
                x[i] = branch(x[i])
            xs = x
        else:
            xs = [branch(t) for branch, t in zip(self.branches, x)]
        outs = []
        for i, items in enumerate(self.rows):
            target = (xs[i].shape[-2], xs[i].shape[-1])
            row = _Row()
            for item in items:
                item.contribute(xs, target, row)
            outs.append(exchange(row.inputs, None, row.shifts if row.shifted else None, convs=row.convs,
                                 size=target, mode=self.mode, align_corners=self.align_corners, relu=True,
                                 backend=self.backend))
        return outs
