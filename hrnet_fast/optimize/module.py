"""The module `optimize` returns: the rewritten model behind the checks that
keep inference-only use safe.

Every call: the module must not be in training mode, the input must have
the rank, dtype and device `optimize` expected and must not require grad
(under grad mode), and the source model must be unchanged
(hrnet_fast.plan.guard.ModelGuard: a parameter or buffer changed in place,
a training-mode forward, a move or cast, or a replaced tensor raises
StaleSourceError). Edits through `.data` bypass PyTorch's version counters
and are not seen. Then the forward runs under no_grad, from a
CUDA graph when that is on (hrnet_fast.optimize.cudagraphs), on the input
cast to the compute dtype and layout; outputs come back in the input's dtype
and memory format, as fresh tensors that no later call overwrites. Under
grad mode they require grad, as the source model's outputs would, and a
backward through them raises an error that points to `convert`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from .convs import recording
from .cudagraphs import GraphRunner
from ..plan.guard import ModelGuard
from .report import Report
from .settings import Settings

_TRAINING = ("hrnet_fast.optimize: the optimized module is for inference only (BatchNorms are folded, weights are "
             "copies, no gradients flow). For training or fine-tuning use hrnet_fast.convert(model), which keeps "
             "the model's own parameters and supports backward")


class StaleSourceError(RuntimeError):
    """The source model changed after `optimize`; optimize it again."""


class _NoBackward(torch.autograd.Function):
    """Makes outputs part of an autograd graph whose backward raises: under
    grad mode the outputs require grad as the source model's would, and
    `backward` through them says what to use instead."""

    @staticmethod
    def forward(ctx, anchor: Tensor, *outs: Tensor):
        # Fresh tensors: an output that is a custom Function's input would
        # come back as a view that cannot be modified in place.
        return tuple(t.clone() for t in outs)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_TRAINING)


# The one tensor that requires grad, so that _NoBackward records a node.
_ANCHOR = torch.zeros((), requires_grad=True)


def _with_raising_backward(out: Any) -> Any:
    flat, spec = tree_flatten(out)
    picks = [k for k, t in enumerate(flat) if isinstance(t, Tensor) and t.is_floating_point()]
    if not picks:
        return out
    wrapped = _NoBackward.apply(_ANCHOR, *[flat[k] for k in picks])
    for k, t in zip(picks, wrapped):
        flat[k] = t
    return tree_unflatten(flat, spec)


class OptimizedModule(nn.Module):
    """An HRNet (or any model) rewritten for inference by
    `hrnet_fast.optimize`. `report` says what was folded and fused,
    `settings` how it runs; `graphs` holds the CUDA graphs (None when off)."""

    def __init__(self, body: nn.Module, settings: Settings, guard: ModelGuard, report: Report):
        super().__init__()
        self.body = body
        self.settings = settings
        self.report = report
        self._guard = guard
        self.graphs: Optional[GraphRunner] = (
            GraphRunner(self._compute, settings.dtype, settings.channels_last) if settings.cuda_graph else None)
        self.training = False

    def extra_repr(self) -> str:
        s = self.settings
        return (f"device={s.device}, dtype={s.dtype}, input_dtype={s.input_dtype}, channels_last={s.channels_last}, "
                f"cuda_graph={s.cuda_graph}, platform={s.platform.value}, backend={s.backend!r}")

    # -- inference only -----------------------------------------------------

    def train(self, mode: bool = True) -> "OptimizedModule":
        if mode:
            raise RuntimeError(_TRAINING)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "OptimizedModule":
        if requires_grad:
            raise RuntimeError(_TRAINING)
        return self

    def _apply(self, fn, recurse: bool = True):
        raise RuntimeError("hrnet_fast.optimize: the optimized module is fixed to the device, dtype and layout it "
                           "was built for (its weights are prepacked for them); call hrnet_fast.optimize(model, "
                           "dtype=..., ...) on the model moved where it should run")

    def clear_graphs(self) -> None:
        """Free every captured CUDA graph (they are captured again on demand)."""
        if self.graphs is not None:
            self.graphs.clear()

    # -- call ---------------------------------------------------------------

    def _check(self, x: Any) -> None:
        s = self.settings
        if self.training:
            raise RuntimeError(_TRAINING)
        if not isinstance(x, Tensor):
            raise TypeError(f"hrnet_fast.optimize: the optimized module takes one tensor, got {type(x).__name__}")
        if x.dim() != s.input_rank or x.dtype != s.input_dtype or x.device != s.device:
            raise ValueError(f"hrnet_fast.optimize: expected a {s.input_rank}-D {s.input_dtype} tensor on {s.device} "
                             f"(as the example input / model given to optimize), got a {x.dim()}-D {x.dtype} tensor "
                             f"on {x.device}; optimize again for other inputs")
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(_TRAINING + "; the input requires grad, but no gradient can flow through this module")
        change = self._guard.change()
        if change is not None:
            raise StaleSourceError(f"hrnet_fast.optimize: the source model changed after optimize(): {change}. The "
                                   f"optimized module holds folded copies of its weights and would serve stale "
                                   f"results; call hrnet_fast.optimize(model) again")

    def _compute(self, x: Tensor) -> Any:
        return self.body(x)

    def _to_compute(self, x: Tensor) -> Tensor:
        s = self.settings
        fmt = torch.channels_last if s.channels_last and x.dim() == 4 else torch.preserve_format
        return x.to(dtype=s.dtype, memory_format=fmt)

    def forward(self, x: Tensor) -> Any:
        self._check(x)
        # A trace, an export or torch.compile records the computation only:
        # no graphs, no autograd node (and plain convolutions, convs.py).
        rec = recording()
        dtype = x.dtype
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
            else torch.contiguous_format
        with torch.no_grad():
            if self.graphs is not None and not rec:
                out, static = self.graphs.run(x, lambda t: self._compute(self._to_compute(t)))
            else:
                out, static = self._compute(self._to_compute(x)), False

        grad = torch.is_grad_enabled()

        def finish(t):
            if not isinstance(t, Tensor):
                return t
            f = fmt if t.dim() == 4 else torch.contiguous_format
            floating = t.is_floating_point()
            # Graph outputs are static buffers: copied here, or (floating
            # outputs under grad mode) by _NoBackward.
            copy = static and not (grad and floating)
            return t.to(dtype=dtype if floating else t.dtype, memory_format=f, copy=copy)

        out = tree_map(finish, out)
        return _with_raising_backward(out) if grad and not rec else out
