"""The inference path of a FusedExchange, compiled to folded weights.

In eval under no_grad (or inference_mode) with running statistics, every
term of a module's exchange is a fixed chain of library calls on folded
weights. Resolving the terms, checking each fold and building each row's
arguments on every call cost several times the 40 microseconds a stage-4
module's Python work is allowed. `InferenceRows` does that work once, for
one input signature, and keeps per row the steps and their folded weights.

It stays valid while nothing it was built from changes, checked on every
call in one pass: no forward hooks on any module the terms run, every BN in
eval, every tensor a fold was made from unmodified (its version counter,
including a BN's num_batches_tracked, which training bumps) and in the same
storage (.to() moves every tensor of a module: the conv's weight and the
BN's running mean stand for the rest). Swapped tensors or modules (a new
Parameter, load_state_dict(assign=True), SyncBatchNorm conversion) make
the owning FusedExchange compile again (module, parameter and buffer
registration hooks), which drops these rows. Anything else -- training, grad mode, hooks, autocast, torch.compile
or a trace, an up-branch whose resizes the op cannot compose -- runs the
general term path.

After a first run the rows are usually compiled once more, into one C++
call (hrnet_fast.native_rows); these rows stay the reference it must match
and the path it falls back to.
"""
from __future__ import annotations

from operator import attrgetter, methodcaller
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import folding
from .layers import uses_batch_stats
from .pointwise import bound_conv1x1
from . import shared_source
from .shared_source import SharedSource
from .terms import DownTerm, IdentityTerm, OpaqueTerm, Term, UpTerm, size_mismatch


_VERSION = attrgetter("_version")
_DATA_PTR = methodcaller("data_ptr")


class _Folded:
    """One folded (conv, BN) pair: its weights, the conv's geometry, and
    the tensors its validity rests on."""
    __slots__ = ("conv", "bn", "weight", "bias", "geometry", "sources")

    def __init__(self, conv, bn, dtype: torch.dtype):
        self.conv, self.bn = conv, bn
        self.weight, self.bias = folding.fold(conv, bn, dtype)
        self.geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
        self.sources = folding.fold_tensors(conv, bn)

    def conv2d(self, x: Tensor) -> Tensor:
        stride, padding, dilation, groups = self.geometry
        return F.conv2d(x, self.weight, self.bias, stride, padding, dilation, groups)


def _eligible(terms: Sequence[Sequence[Term]], xs: Sequence[Tensor]) -> bool:
    """Every term can be a fixed chain now: running statistics everywhere,
    and every up-branch's resize is the op's single resize."""
    for i, row in enumerate(terms):
        target = tuple(xs[i].shape[-2:])
        for t in row:
            if isinstance(t, UpTerm):
                if uses_batch_stats(t.bn):
                    return False
                if t.upsample is not None:
                    h, w = xs[t.j].shape[-2:]
                    if t.upsample.output_size(h, w) != target:
                        return False
            elif isinstance(t, DownTerm):
                if any(uses_batch_stats(bn) for _, _, bn, _ in t.links):
                    return False
    return True


class InferenceRows:
    """The compiled rows for one input signature (see the module doc)."""

    def __init__(self, rows: Sequence[Sequence[Term]], groups: Sequence[SharedSource], xs: Sequence[Tensor],
                 convs_in_op: bool, merge: bool):
        dtype = xs[0].dtype
        self.folded: List[_Folded] = []
        self.modules = tuple({id(m): m for row in rows for t in row for m in t.modules}.values())

        def folded(conv, bn) -> _Folded:
            f = _Folded(conv, bn, dtype)
            self.folded.append(f)
            return f

        # Merged first convs: one stacked conv per source branch (CPU, NCHW).
        self.groups: List[tuple] = []
        merged: Dict[Tuple[int, int], bool] = {}
        for g in groups if merge else ():
            members = shared_source.members_now(g, xs[g.j])
            if members is None:
                continue
            parts = [folded(m.conv, m.bn) for m in members]
            weight = torch.cat([p.weight for p in parts])
            bias = torch.cat([p.bias for p in parts])
            conv = bound_conv1x1(xs[g.j], weight, bias) if g.kind == "up" else None
            self.groups.append((g, members, weight, bias, [p.weight.shape[0] for p in parts], conv))
            for m in members:
                merged[(m.i, g.j)] = True
        # Per row: (target index, steps); a step is ("id", j), ("up", j,
        # conv bound to x_j's shape or None when merged, slot, its fold,
        # whether it is 1x1), ("merged",
        # slot), ("down", j, [earlier folds], last fold, conv term?, slot,
        # from merged?) or ("opaque", term); merged outputs are read by slot.
        self.rows: List[Tuple[int, List[tuple]]] = []
        for i, row in enumerate(rows):
            steps: List[tuple] = []
            for t in row:
                slot = (t.i, t.j)
                if isinstance(t, IdentityTerm):
                    steps.append(("id", t.j))
                elif isinstance(t, UpTerm):
                    if slot in merged:
                        steps.append(("up", t.j, None, slot, None, True))
                    else:
                        f = folded(t.conv, t.bn)
                        steps.append(("up", t.j, bound_conv1x1(xs[t.j], f.weight, f.bias) if t.pointwise
                                      else f.conv2d, slot, f, t.pointwise))
                elif isinstance(t, DownTerm):
                    links = [folded(conv, bn) for _, conv, bn, _ in t.links]
                    first = 1 if slot in merged else 0
                    if slot in merged and len(links) == 1:
                        steps.append(("merged", slot))
                        continue
                    steps.append(("down", t.j, links[first:-1], links[-1], t.in_kernel and convs_in_op, slot,
                                  slot in merged))
                elif isinstance(t, OpaqueTerm):
                    steps.append(("opaque", t))
            self.rows.append((i, steps))

        self.runners: List[Optional[Callable]] = [None] * len(self.rows)
        # A module's hook dicts are the same objects for its lifetime
        # (register_forward_hook adds to them): one any() sees every hook.
        self.hook_dicts = [d for m in self.modules for d in (m._forward_hooks, m._forward_pre_hooks)]
        self.bns = tuple({id(f.bn): f.bn for f in self.folded}.values())
        self.sources = [t for f in self.folded for t in f.sources]
        self.versions = [t._version for t in self.sources]
        self.placed = [t for f in self.folded for t in (f.sources[0], f.sources[-1])]
        self.places = [t.data_ptr() for t in self.placed]

    def valid(self) -> bool:
        # map() over C getters: about half the time of the same loops in
        # Python bytecode, and this runs on every call.
        if any(self.hook_dicts):
            return False
        for bn in self.bns:
            if bn.training:
                return False
        return list(map(_VERSION, self.sources)) == self.versions and \
            list(map(_DATA_PTR, self.placed)) == self.places

    def run(self, xs: Sequence[Tensor], call, bind) -> List[Tensor]:
        """The rows' outputs. A row's first exchange runs through
        `call(inputs, convs, target)` (every check, the backend's choice);
        later ones through the runner `bind(inputs, convs, target)` returned
        then (ops.bind_exchange), which the signature keeps valid."""
        first: Dict[Tuple[int, int], Tensor] = {}
        for group, members, weight, bias, sizes, conv in self.groups:
            shared_source.merged_outputs(group, members, xs[group.j], weight, bias, sizes, first, conv)
        outs = []
        runners = self.runners
        for r, (i, steps) in enumerate(self.rows):
            target = (xs[i].shape[-2], xs[i].shape[-1])
            inputs: List[Tensor] = []
            convs: List[Tuple[Tensor, Tensor, Optional[Tensor]]] = []
            for step in steps:
                kind = step[0]
                if kind == "id":
                    inputs.append(xs[step[1]])
                elif kind == "up":
                    _, j, conv, slot, _, _ = step
                    inputs.append(first[slot] if conv is None else conv(xs[j]))
                elif kind == "merged":
                    z = first[step[1]]
                    if (z.shape[-2], z.shape[-1]) != target:
                        raise size_mismatch(target, z.shape[-2:])
                    inputs.append(z)
                elif kind == "down":
                    _, j, earlier, last, as_term, slot, from_merged = step
                    a = first[slot] if from_merged else xs[j]
                    for f in earlier:
                        a = torch.relu_(f.conv2d(a))
                    if as_term:
                        landed = ((a.shape[-2] - 1) // 2 + 1, (a.shape[-1] - 1) // 2 + 1)
                        if landed != target:
                            raise size_mismatch(target, landed)
                        convs.append((a, last.weight, last.bias))
                    else:
                        z = last.conv2d(a)
                        if (z.shape[-2], z.shape[-1]) != target:
                            raise size_mismatch(target, z.shape[-2:])
                        inputs.append(z)
                else:
                    term = step[1]
                    t = term.layer(xs[term.j])
                    if not term.host_resizes and tuple(t.shape[-2:]) != target:
                        raise size_mismatch(target, t.shape[-2:])
                    inputs.append(t)
            runner = runners[r]
            if runner is None:
                outs.append(call(inputs, convs, target))
                runners[r] = bind(inputs, convs, target)
            else:
                outs.append(runner(inputs, convs))
        return outs


def signature(xs: Sequence[Tensor], convs_in_op: bool) -> tuple:
    """What an InferenceRows is built for: the inputs' shapes, dtype, device
    and NCHW contiguity (the merged convs need it), inference mode, and
    whether conv terms go to the op."""
    x0 = xs[0]
    return (tuple(tuple(x.shape) for x in xs), x0.dtype, x0.device, tuple(x.is_contiguous() for x in xs),
            torch.is_inference_mode_enabled(), convs_in_op)


__all__ = ["InferenceRows", "signature", "_eligible"]
