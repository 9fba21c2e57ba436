"""The torch-function mode of a lean forward: it sees every torch call of
the model's forward and, for the cheap pointwise ones, registers how their
output is recomputed (memory.recipes) -- whatever the layout's own code
looks like (timm, the official repositories, mmseg / mmpose, this
package's models).

    BatchNorm (batch statistics)  torch.native_batch_norm instead of
                                  F.batch_norm (the same kernel family, and
                                  the statistics come back): the output is
                                  (c - mean) * invstd * weight + bias of the
                                  convolution output c, which BatchNorm
                                  saves anyway. No second reduction.
    BatchNorm (running statistics, a frozen BN)  the same affine, from the
                                  running statistics
    ReLU, add (also in place), F.interpolate, torch.cat, the exchange op
                                  recomputed from their inputs' recipes

Anything else runs as it is and its saved tensors are kept (SyncBatchNorm,
whose statistics its own autograd Function computes, among them). Under
replay (memory.checkpoint) every BatchNorm with batch statistics is applied
with the statistics its forward recorded -- SyncBatchNorm's cross-process
ones too (torch.batch_norm_gather_stats_with_counts) -- and neither its
running statistics nor its batch count move again.

Example:
    >>> import torch, torch.nn as nn
    >>> from hrnet_fast.memory.mode import LeanMode
    >>> from hrnet_fast.memory.recipes import Session
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    >>> x = torch.randn(2, 3, 8, 8)
    >>> with Session() as s, LeanMode(s):
    ...     y = net(x)
    >>> y.sum().backward()
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .recipes import Recipe, Session


def affine(c: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, invstd: Tensor,
           dtype: torch.dtype) -> Tensor:
    """A BatchNorm's output from its input and statistics, by ATen's
    kernel's formula: alpha = invstd * weight, beta = bias - mean * alpha in
    the statistics' precision, then c * alpha + beta (within a rounding of
    the kernel's output: neither it nor a multiply and an add match it to
    the bit)."""
    alpha = invstd if weight is None else invstd * weight.to(invstd.dtype)
    beta = -mean * alpha if bias is None else bias.to(invstd.dtype) - mean * alpha
    shape = (1, -1) + (1,) * (c.dim() - 2)
    # one pass over c, not a multiply and then an add
    return torch.addcmul(beta.view(shape), c.to(alpha.dtype), alpha.view(shape)).to(dtype)


class BatchNormReplay(torch.autograd.Function):
    """A training-mode BatchNorm applied with given batch statistics: its
    forward is the affine, its backward exactly BatchNorm's (through the
    statistics' dependence on the input), without a second reduction."""

    @staticmethod
    def forward(ctx, c: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, invstd: Tensor,
                eps: float) -> Tensor:
        ctx.save_for_backward(c, weight, mean, invstd)
        ctx.eps = eps
        return affine(c, weight, bias, mean, invstd, c.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        c, weight, mean, invstd = ctx.saved_tensors
        grads = torch.ops.aten.native_batch_norm_backward(
            grad, c, weight, None, None, mean, invstd, True, ctx.eps,
            [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grads[0], grads[1], grads[2], None, None, None


def _relu(args, kwargs):
    inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
    return bool(inplace), torch.relu, (args[0],), {}


def _add(inplace: bool):
    def rule(args, kwargs):
        return inplace, torch.add, tuple(args[:2]), {k: v for k, v in kwargs.items() if k == "alpha"}
    return rule


def _same(fn: Callable[..., Tensor]):
    def rule(args, kwargs):
        return False, fn, tuple(args), dict(kwargs)
    return rule


_RULES: Dict[Callable, Callable] = {
    F.relu: _relu,
    torch.relu: lambda a, k: (False, torch.relu, (a[0],), {}),
    torch.Tensor.relu: lambda a, k: (False, torch.relu, (a[0],), {}),
    torch.relu_: lambda a, k: (True, torch.relu, (a[0],), {}),
    torch.Tensor.relu_: lambda a, k: (True, torch.relu, (a[0],), {}),
    torch.add: _add(False),
    torch.Tensor.add: _add(False),
    torch.Tensor.__add__: _add(False),
    torch.Tensor.__radd__: _add(False),
    torch.Tensor.add_: _add(True),
    torch.Tensor.__iadd__: _add(True),
    F.interpolate: _same(F.interpolate),
    torch.cat: _same(torch.cat),
}


def _add_into(a: Tensor, b: Any, alpha: Any = 1) -> Tensor:
    """torch.add(a, b, alpha=alpha), written over `a` where that is the same
    tensor (b broadcasts to a, and the sum keeps a's dtype)."""
    if isinstance(b, Tensor) and (torch.result_type(a, b) != a.dtype
                                  or torch.broadcast_shapes(a.shape, b.shape) != a.shape):
        return torch.add(a, b, alpha=alpha)
    return a.add_(b, alpha=alpha)


# Recipes whose value may be computed over their first argument's fresh value
# (Recipe.into), and the functions that never return an alias of an input.
_INTO: Dict[Callable, Callable] = {torch.relu: torch.relu_, torch.add: _add_into}
_FRESH = (torch.relu, torch.add, affine)


def _exchange_op():
    from .._ext import extension

    return torch.ops.hrnet_fast.exchange.default if extension() is not None else None


def _ref(session: Session, v: Any, target: Optional[Tensor], before: Optional[int]) -> Any:
    """`v` with every tensor in it replaced by what a recipe reads for it
    (`target`, an in-place op's input, at its version `before` the op)."""
    if isinstance(v, Tensor):
        return session.ref(v, before if v is target else None)
    if isinstance(v, (list, tuple)):
        return type(v)(_ref(session, u, target, before) for u in v)
    return v


class LeanMode(TorchFunctionMode):
    """Registers recipes in `session` for the calls it sees (module doc).
    `stats`: the batch statistics of every BatchNorm in call order, recorded
    (a list to append to) or, with `replay`, applied again."""

    def __init__(self, session: Optional[Session], stats: Optional[List[Tuple[Tensor, Tensor]]] = None,
                 replay: bool = False, counters: Tuple[Tensor, ...] = ()):
        super().__init__()
        self.session = session
        self.stats = stats
        self.replay = replay
        # The BatchNorms' num_batches_tracked: counted once, by the forward.
        self.counters = {id(t) for t in counters}
        exchange = _exchange_op()
        self.rules = dict(_RULES)
        if exchange is not None:
            self.rules[exchange] = _same(exchange)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        session = self.session
        if func is F.batch_norm:
            return self._batch_norm(*args, **kwargs)
        if func is torch.batch_norm_gather_stats_with_counts and self.stats is not None:
            # SyncBatchNorm's cross-process statistics (and running update):
            # recorded in a region's forward, given back in its replay.
            if self.replay:
                return self.stats.pop(0)
            stats = func(*args, **kwargs)
            self.stats.append(tuple(t.detach() for t in stats))
            return stats
        if self.replay and func is torch.Tensor.add_ and id(args[0]) in self.counters:
            return args[0]
        rule = self.rules.get(func)
        if session is None or rule is None:
            return func(*args, **kwargs)
        inplace, pure, pure_args, pure_kwargs = rule(args, kwargs)
        target = pure_args[0] if inplace else None
        before = target._version if isinstance(target, Tensor) else None
        session.depth += 1
        try:
            out = func(*args, **kwargs)
        finally:
            session.depth -= 1
        if isinstance(out, Tensor) and out.requires_grad and out.is_floating_point():
            refs = self._refs(pure_args, target, before)
            if refs is not None:
                session.register(out, Recipe(pure, refs, self._refs_kw(pure_kwargs), out, into=_INTO.get(pure),
                                             fresh=pure in _FRESH))
        if session.depth == 0:
            session.resolve()
        return out

    def _refs(self, args: tuple, target: Optional[Tensor], before: Optional[int]):
        """The recipe's arguments: None when an in-place op's input had no
        recipe (its old value is gone)."""
        refs = _ref(self.session, args, target, before)
        if target is not None and not isinstance(refs[0], Recipe):
            return None
        return refs

    def _refs_kw(self, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        session = self.session
        return {k: session.ref(v) if isinstance(v, Tensor) else v for k, v in kwargs.items()}

    def _batch_norm(self, input: Tensor, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5) -> Tensor:
        session = self.session
        if not training:
            out = F.batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
            if session is not None and out.requires_grad:
                with torch.no_grad():
                    mean, invstd = running_mean.clone(), torch.rsqrt(running_var + eps)
                recipe = Recipe(affine, (session.ref(input), session.ref(weight) if weight is not None else None,
                                         session.ref(bias) if bias is not None else None, session.ref(mean),
                                         session.ref(invstd), input.dtype), {}, out, fresh=True)
                session.register(out, recipe)
            return out
        F._verify_batch_size(input.size())
        if self.replay:
            mean, invstd = self.stats.pop(0)
            out = BatchNormReplay.apply(input, weight, bias, mean, invstd, eps)
        else:
            if session is not None:
                session.depth += 1
            try:
                out, mean, invstd = torch.native_batch_norm(input, weight, bias, running_mean, running_var, True,
                                                            momentum, eps)
            finally:
                if session is not None:
                    session.depth -= 1
            if self.stats is not None:
                self.stats.append((mean.detach(), invstd.detach()))
        if session is not None and out.requires_grad:
            recipe = Recipe(affine, (session.ref(input), None if weight is None else session.ref(weight),
                                     None if bias is None else session.ref(bias), session.ref(mean),
                                     session.ref(invstd), out.dtype), {}, out, fresh=True)
            session.register(out, recipe)
            if session.depth == 0:
                session.resolve()
        return out


__all__ = ["BatchNormReplay", "LeanMode", "affine"]
