"""One convolution per source branch for the exchange's first layers in
eval.

Every output branch i reads every other branch j through its own first
conv: a 1x1 conv for the coarser j (UP) or the first stride-2 3x3 conv of a
chain for the finer j (DOWN). The convs that read the same branch j with the
same geometry are one convolution with their weights stacked along the
output channels; the result is split back into the per-row tensors. On the
CPU that saves the per-call cost of the smaller convs (W32 stage 4, batch 1:
1.6x for branch 0's three stride-2 convs and for branch 3's three 1x1 convs,
1.1-1.3x at batch 4; benchmarks/fuse_convs_cpu.py). A channel slice of a
batch-1 NCHW tensor is contiguous; with larger batches the slices are
strided views, which the next conv or the op reads as they are (the whole
model is still faster: benchmarks/RESULTS.md). Channels_last sources are
left alone. With running statistics (eval or
frozen BN) each BN is folded into its conv first, so the merge is exact up
to float rounding; batch statistics need each conv's own output, so
training never merges.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, NamedTuple, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .layers import has_hooks, uses_batch_stats
from .pointwise import conv1x1

if TYPE_CHECKING:  # pragma: no cover
    from .modules import FusedExchange

UP, DOWN = "up", "down"


class SharedSource(NamedTuple):
    """The first convs that read branch j (kind UP or DOWN), one per output
    branch in `rows`."""
    j: int
    kind: str
    rows: Tuple[int, ...]


def shared_sources(plan) -> List[SharedSource]:
    """Groups of two or more first convs reading the same branch."""
    groups: Dict[Tuple[int, str], List[int]] = {}
    for i, row in enumerate(plan):
        for term in row:
            if (term.kind == UP and term.pointwise) or term.kind == DOWN:
                groups.setdefault((term.j, term.kind), []).append(i)
    return [SharedSource(j, kind, tuple(rows)) for (j, kind), rows in groups.items() if len(rows) >= 2]


def _geometry(conv: nn.Conv2d) -> tuple:
    return conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups


def merged_first_convs(fx: "FusedExchange", xs: List[Tensor]) -> Dict[Tuple[int, int], Tensor]:
    """{(i, j): the output of row i's first conv on branch j (BN folded,
    ReLU applied where the chain goes on)} for every group that can merge
    now; the rows look anything else up as before."""
    out: Dict[Tuple[int, int], Tensor] = {}
    rows = fx.host.fuse_layers
    for group in fx.shared_sources:
        x = xs[group.j]
        if not x.is_contiguous() or x.device.type != "cpu":
            continue
        members = []
        for i in group.rows:
            layer = rows[i][group.j]
            if group.kind == UP:
                link, key, goes_on = layer, (i, group.j), False
            else:
                link, goes_on = layer[0], len(layer) > 1
                key = (i, group.j, 0) if goes_on else (i, group.j)
                if has_hooks(link, *link):
                    break
            conv, bn = link[0], link[1]
            if uses_batch_stats(bn):
                break
            members.append((i, key, conv, bn, goes_on))
        else:
            geometry = {_geometry(m[2]) for m in members}
            if len(geometry) != 1 or next(iter(geometry))[4] != 1:
                continue
            folded = [fx._folded(key, conv, bn) for _, key, conv, bn, _ in members]
            weight, bias = _stacked(fx, group, folded, x.dtype)
            if group.kind == UP:
                y = conv1x1(x, weight, bias)
            else:
                conv = members[0][2]
                y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
            parts = y.split([w.shape[0] for w, _ in folded], dim=1)
            in_place = not torch.is_grad_enabled()
            for (i, _, _, _, goes_on), part in zip(members, parts):
                if goes_on:
                    part = torch.relu_(part) if in_place else torch.relu(part)
                out[(i, group.j)] = part
    return out


def _stacked(fx: "FusedExchange", group: SharedSource, folded, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """The folded weights and biases stacked along the output channels,
    cached while every member's fold is the same (cached) tensor object.
    The entry holds those tensors, so none of them can be freed and have
    its identity reused by a new fold."""
    members = [t for pair in folded for t in pair]
    key = ("shared", group.j, group.kind)
    hit = fx._stacked.get(key)
    if hit is not None and hit[1] == dtype and len(hit[0]) == len(members) and \
            all(a is b for a, b in zip(hit[0], members)):
        return hit[2]
    weight = torch.cat([w for w, _ in folded]).to(dtype)
    bias = torch.cat([b for _, b in folded]).to(dtype)
    if not any(t.requires_grad for t in members) and not torch.compiler.is_compiling():
        fx._stacked[key] = (members, dtype, (weight, bias))
    return weight, bias
