"""An HRNet module for inference: its branches as built by the Builder, its
exchange as the eval program `convert` also compiles (hrnet_fast.plan),
with optimize's options:

- every fuse layer folded ahead of time, cast to the compute dtype and
  device (the layers that cannot fold, and layers with hooks, run as the
  Builder builds them);
- the convolutions by the platform's engine: oneDNN with weights prepacked
  per input shape on the CPU, cuDNN's fused conv + bias + ReLU on CUDA
  where its ReLU keeps NaN (plan.engines);
- with oneDNN a folded conv carries its bias (added in the same pass);
  elsewhere the bias goes to the op as the input's shift, which the op
  applies while it reads the input (cuDNN's plain convolution would add it
  in a separate pass);
- the last conv of a down chain joins the op as a conv term where the
  backend computes conv terms itself.

Programs are compiled per input signature (a few) and run as one C++ call
where every row goes to the C++ op. A trace, an export or torch.compile
records the plain form (aten convolutions, the op's definition).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..backend import conv_terms_in_kernel
from ..convert.folding import fold
from ..convert.layers import has_hooks
from ..convert.layouts import read_terms, run_branches, writes_branches_back
from ..convert.terms import OpaqueTerm
from ..plan.cache import ProgramCache
from ..plan.compiler import Options, compile_program
from ..plan.engines import prepack
from ..plan.executor import PythonExecutor
from ..plan.native import run as run_native
from ..plan.program import Conv, Program
from .convs import Platform, cudnn_relu_keeps_nan, recording
from .foldable import foldable_bn_reason

_ENGINES = {Platform.MKLDNN: "mkldnn", Platform.CUDNN: "cudnn", Platform.PLAIN: "aten"}


def _laid_out(ins: Conv, shape, channels_last: bool) -> Conv:
    """`ins` with its weight laid out for its engine and input: oneDNN's
    blocked layout for this input shape where the inputs are channels_last,
    else the inputs' layout."""
    if ins.engine == "mkldnn":
        if not channels_last:
            return ins
        w = prepack(ins.weight, ins.padding, ins.stride, ins.dilation, ins.groups, shape)
    else:
        w = ins.weight.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return replace(ins, weight=w)


class OptimizedHRModule(nn.Module):
    """An HRNet module (branches + exchange) for inference; forward takes
    and returns lists of branch tensors as the source module does."""

    def __init__(self, host: nn.Module, builder, name: str = ""):
        super().__init__()
        terms, (mode, align_corners) = read_terms(host)  # ValueError: the Builder runs the host as it is
        s = builder.settings
        self.settings = s
        self.mode, self.align_corners = mode, bool(align_corners) and mode == "bilinear"
        self.write_back = writes_branches_back(host)
        self.where = name or type(host).__name__
        prefix = f"{name}." if name else ""
        self.branches = nn.ModuleList(builder.build(b, f"{prefix}branches.{k}") for k, b in enumerate(host.branches))
        self.parts = nn.ModuleList()  # the summands that run as modules
        self._folds: Dict[tuple, Tuple[Tensor, Tensor]] = {}
        report = builder.report
        self.terms = []
        for row in terms:
            self.terms.append([self._term(t, builder, f"{prefix}fuse_layers.{t.i}.{t.j}") for t in row])
        report.exchange_modules += 1
        report.exchange_rows += len(self.terms)
        self.programs = ProgramCache(max_entries=8)

    # -- build -------------------------------------------------------------

    def _term(self, term, builder, name: str):
        """`term`, its layers folded now; or, where they cannot fold (or
        carry hooks, which must fire), the layer as the Builder builds it."""
        report = builder.report
        if term.kind == "id":
            return term
        pairs = [] if term.kind == "opaque" else \
            [(term.conv, term.bn, (term.i, term.j))] if term.kind == "up" else \
            [(conv, bn, (term.i, term.j, k) if k < len(term.links) - 1 else (term.i, term.j))
             for k, (_, conv, bn, _) in enumerate(term.links)]
        if not pairs or has_hooks(*term.modules) or any(foldable_bn_reason(bn) is not None for _, bn, _ in pairs):
            module = builder.build(term.layer, name)
            self.parts.append(module)
            report.opaque_terms += 1
            return OpaqueTerm(term.i, term.j, module, getattr(term, "host_resizes", False))
        s = self.settings
        for k, (conv, bn, key) in enumerate(pairs):
            w, b = fold(conv, bn, torch.promote_types(conv.weight.dtype, torch.float32))
            self._folds[key] = (w.detach().to(device=s.device, dtype=s.dtype).contiguous(),
                                b.detach().to(device=s.device, dtype=s.dtype))
            report.bns_folded += 1
            report.convs += 1
            if term.kind == "down" and k < len(pairs) - 1:
                report.epilogues["relu"] = report.epilogues.get("relu", 0) + 1
        return term

    # -- run ---------------------------------------------------------------

    def _options(self, xs: List[Tensor], plain: bool) -> Options:
        s = self.settings
        folds = self._folds
        engine = "aten" if plain else _ENGINES[s.platform]
        if engine == "cudnn" and not cudnn_relu_keeps_nan(s.device, s.dtype):
            engine = "aten"  # its fused ReLU would turn NaN into 0
        channels_last = all(x.is_contiguous(memory_format=torch.channels_last) for x in xs)
        return Options(self.mode, self.align_corners, s.backend, fold=lambda conv, bn, key, dtype: folds[key],
                       engine=engine, convs_in_kernel=conv_terms_in_kernel(s.backend, s.device.type),
                       bias_to_op=s.platform is not Platform.MKLDNN, guard=False, where=self.where,
                       prepare=None if plain else lambda ins, shape: _laid_out(ins, shape, channels_last))

    def _compile(self, xs: List[Tensor], plain: bool = False) -> Optional[Program]:
        return compile_program(self.terms, xs, self._options(xs, plain))

    def extra_repr(self) -> str:
        return f"rows={len(self.terms)}, mode={self.mode!r}, align_corners={self.align_corners}, " \
               f"backend={self.settings.backend!r}"

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        xs = run_branches(self.branches, x, self.write_back)
        if recording():
            # Traces, exports and torch.compile record standard operators.
            return PythonExecutor(self._compile(xs, plain=True)).run(xs)
        state = self.programs.native
        if state is not None:
            outs = run_native(state, xs)
            if outs is not None:
                return outs
        return self.programs.run(xs, lambda: self._compile(xs))
