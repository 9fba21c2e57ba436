"""Training that keeps less for backward, with the same gradients and
running statistics: `hrnet_fast.convert(model, memory=...)`.

    memory=None          nothing changes (eager's saved tensors)
    memory="lean"        the model's forward runs under the lean mode
                         (mode.py): every BatchNorm, ReLU, add,
                         interpolation, concatenation and exchange output is
                         recomputed in backward from the convolution outputs
                         it came from (recipes.py) -- one full-size tensor
                         per conv -> BN -> ReLU unit instead of two, and no
                         convolution runs twice
    memory="checkpoint"  lean, and every HRNet module but the last, layer1
                         and each transition keeps only its inputs and runs
                         again in backward with its BatchNorms exact
                         (checkpoint.py)

Both act while a forward records a graph (grad mode on) and stand aside
under torch.compile, torch.jit.trace and torch.export, which see the plain
model (the compiler partitions what to save itself). They act on the module
given to `convert` (its forward is wrapped on the instance: type, state_dict
and parameters are unchanged) and on the regions inside it. Higher-order
gradients through them raise; use memory=None for those.

    layouts.py of the convert package finds the HRNet modules; this package
    finds layer1 and the transitions next to them.

Example:
    >>> import torch, hrnet_fast
    >>> m = hrnet_fast.convert(hrnet_fast.models.create("w18_small_v1", "pose"), memory="lean")
    >>> m(torch.randn(2, 3, 64, 64)).sum().backward()
"""
from __future__ import annotations

import re
from typing import Any, Callable, List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .checkpoint import run_region
from .mode import LeanMode
from .recipes import Session

MEMORY = (None, "lean", "checkpoint")
_REGION_NAMES = re.compile(r"(layer1|transition\d+)$")


def active() -> bool:
    """Whether a forward now records a graph the memory modes act on."""
    return (torch.is_grad_enabled() and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch.compiler.is_exporting())


class _Wrapper:
    """A forward set on a module instance around `inner`, the instance
    forward it had (None: its class's)."""

    def __init__(self, module: nn.Module, inner: Optional[Callable[..., Any]]):
        self.module, self.inner = module, inner

    def run(self, *args, **kwargs):
        if self.inner is not None:
            return self.inner(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)


class MemoryForward(_Wrapper):
    """The forward of the module `convert` was given, under the lean mode."""

    def __call__(self, *args, **kwargs):
        if not active():
            return self.run(*args, **kwargs)
        with Session() as session, LeanMode(session):
            return self.run(*args, **kwargs)


class RegionForward(_Wrapper):
    """The forward of one region under memory="checkpoint"."""

    def __call__(self, x):
        if not active():
            return self.run(x)
        if isinstance(x, Tensor):
            return run_region(self.module, lambda xs: [self.run(xs[0])], [x])[0]
        xs = [t for t in x if isinstance(t, Tensor)]
        return run_region(self.module, lambda ts: list(self.run(list(ts))), xs)


def unwrapped(module: nn.Module) -> Optional[Callable[..., Any]]:
    """The module's own instance forward under any memory wrapper (None
    when it has none)."""
    f = module.__dict__.get("forward")
    while isinstance(f, _Wrapper):
        f = f.inner
    return f


def _set_forward(module: nn.Module, forward: Optional[Callable[..., Any]]) -> None:
    if forward is None:
        module.__dict__.pop("forward", None)
    else:
        module.forward = forward


def _regions(model: nn.Module, hosts: List[nn.Module]) -> List[nn.Module]:
    """The HRNet modules, and layer1 and every transition's layers of each
    module that holds HRNet modules."""
    found = list(hosts)
    ids = {id(h) for h in hosts}
    for parent in model.modules():
        if not any(id(m) in ids for m in parent.modules()):
            continue
        for name, child in parent.named_children():
            if not _REGION_NAMES.match(name):
                continue
            if isinstance(child, nn.ModuleList):
                found.extend(c for c in child if c is not None and not isinstance(c, nn.Identity))
            elif child is not None:
                found.append(child)
    return found


def install(model: nn.Module, hosts: List[nn.Module], memory: Optional[str]) -> None:
    """Puts `model` (and for "checkpoint" its regions) under `memory`,
    removing what an earlier convert installed."""
    for m in [model, *_regions(model, hosts)]:
        _set_forward(m, unwrapped(m))
    if memory is None:
        return
    if memory == "checkpoint":
        # The last HRNet module runs lean, not again: its backward comes
        # first, right after the forward, so its activations are there at
        # the step's peak either way (a recomputation would hold eager's).
        for region in _regions(model, hosts):
            if region is hosts[-1]:
                continue
            region.forward = RegionForward(region, region.__dict__.get("forward"))
    model.forward = MemoryForward(model, model.__dict__.get("forward"))


__all__ = ["MEMORY", "MemoryForward", "RegionForward", "active", "install", "unwrapped"]
