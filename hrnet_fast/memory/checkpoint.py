"""memory="checkpoint": a region of the model (an HRNet module, layer1, a
transition) keeps only its inputs for backward and runs again in backward,
with its BatchNorms exact.

torch.utils.checkpoint around a BatchNorm computes the batch statistics a
second time in the recomputation and updates the running statistics twice.
Here the forward runs without a graph under the lean mode (memory.mode),
which records every BatchNorm's batch statistics and updates the running
statistics once; the recomputation applies the recorded statistics
(BatchNormReplay: BatchNorm's own backward, no second reduction) and moves
neither the running statistics nor the batch count. It runs under the
forward's autocast state and random number generator states. The region's inputs are
saved through autograd's saved-tensor hooks like any other tensor (so a
lean forward around it packs them as recipes, and a memory measurement sees
them). The recomputation differentiates the region once; a second backward
through it (create_graph) raises.

Example:
    >>> import torch, torch.nn as nn
    >>> from hrnet_fast.memory.checkpoint import run_region
    >>> block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> x = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> y, = run_region(block, lambda xs: [block(xs[0])], [x])
    >>> y.sum().backward()
    >>> int(block[1].num_batches_tracked)
    1
"""
from __future__ import annotations

import contextlib
from typing import Callable, List, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .mode import LeanMode
from .recipes import _DOUBLE_BACKWARD

Run = Callable[[List[Tensor]], List[Tensor]]


def _counters(module: nn.Module) -> tuple:
    return tuple(m.num_batches_tracked for m in module.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None)


class _State:
    """What a recomputation must see as the forward saw it: the autocast
    state and the random number generators (a dropout draws the same mask)."""

    def __init__(self, device: torch.device):
        self.device = device.type
        self.autocast = torch.amp.is_autocast_available(self.device) and torch.is_autocast_enabled(self.device)
        self.dtype = torch.get_autocast_dtype(self.device) if self.autocast else None
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restored(self):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.random.fork_rng(devices=[self.device] if self.cuda_rng is not None else [],
                                                  device_type="cuda" if self.cuda_rng is not None else "cpu"))
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, self.device)
        stack.enter_context(torch.autocast(self.device, dtype=self.dtype, enabled=self.autocast)
                            if self.autocast else contextlib.nullcontext())
        return stack


class _Region(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module: nn.Module, run: Run, *xs: Tensor):
        stats: list = []
        ctx.state = _State(xs[0].device)
        with LeanMode(None, stats):
            outs = run(list(xs))
        ctx.module, ctx.run, ctx.stats = module, run, stats
        ctx.save_for_backward(*xs)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
        xs = [x.detach().requires_grad_(x.requires_grad) for x in ctx.saved_tensors]
        with torch.enable_grad(), ctx.state.restored(), \
                LeanMode(None, list(ctx.stats), replay=True, counters=_counters(ctx.module)):
            outs = ctx.run(xs)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, *[x.grad if x.requires_grad else None for x in xs])


def run_region(module: nn.Module, run: Run, xs: Sequence[Tensor]) -> List[Tensor]:
    """`run(xs)` (the forward of `module`, whose BatchNorms it uses), keeping
    only `xs` for backward."""
    return list(_Region.apply(module, run, *xs))


__all__ = ["run_region"]
