"""One convolution per source branch for the exchange's first layers in
eval on the CPU.

Every output branch i reads every other branch j through its own first
conv: a 1x1 conv for the coarser j (UP) or the first stride-2 3x3 conv of a
chain for the finer j (DOWN). The convs that read the same branch j with the
same geometry are one convolution with their weights stacked along the
output channels; the result is split back into the per-row tensors. On the
CPU that saves the per-call cost of the smaller convs (W32 stage 4, batch 1:
1.6x for branch 0's three stride-2 convs and for branch 3's three 1x1 convs,
1.1-1.3x at batch 4; benchmarks/fuse_convs_cpu.py). A channel slice of a
batch-1 NCHW tensor is contiguous; with larger batches the slices are
strided views, which the next conv or the op reads as they are. Channels_last
sources are left alone. With running statistics (eval or frozen BN) each BN
is folded into its conv first (through the module's FoldCache), so the merge
is exact up to float rounding; batch statistics need each conv's own output,
so training never merges, and neither do layers with hooks.
"""
from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .folding import FoldCache
from .layers import has_hooks, uses_batch_stats
from .pointwise import conv1x1
from .terms import DownTerm, Term, UpTerm


class SharedSource(NamedTuple):
    """The first convs that read branch j (kind "up" or "down"), one per
    output branch in `rows`, and the terms they belong to."""
    j: int
    kind: str
    rows: Tuple[int, ...]
    terms: Tuple[Term, ...]


def shared_sources(rows: Sequence[Sequence[Term]]) -> List[SharedSource]:
    """Groups of two or more first convs reading the same branch."""
    groups: Dict[Tuple[int, str], List[Term]] = {}
    for terms in rows:
        for t in terms:
            if (isinstance(t, UpTerm) and t.pointwise) or isinstance(t, DownTerm):
                groups.setdefault((t.j, t.kind), []).append(t)
    return [SharedSource(j, kind, tuple(t.i for t in ts), tuple(ts)) for (j, kind), ts in groups.items()
            if len(ts) >= 2]


def _geometry(conv) -> tuple:
    return conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups


class Member(NamedTuple):
    """One first conv of a group: its row, fold key, conv and BN, and
    whether its chain goes on (then ReLU follows)."""
    i: int
    key: tuple
    conv: object
    bn: object
    goes_on: bool


def members_now(group: SharedSource, x: Tensor) -> Optional[List[Member]]:
    """The group's first convs when they can run as one conv on `x` now
    (a contiguous NCHW CPU tensor, running statistics, no hooks, one
    geometry), else None."""
    if x.device.type != "cpu" or not x.is_contiguous():
        return None
    members = []
    for term in group.terms:
        if group.kind == "up":
            if term.hooked():
                return None
            conv, bn, key, goes_on = term.conv, term.bn, (term.i, term.j), False
        else:
            link, conv, bn, parts = term.links[0]
            goes_on = len(term.links) > 1
            key = (term.i, term.j, 0) if goes_on else (term.i, term.j)
            if has_hooks(term.layer, link, *parts):
                return None
        if uses_batch_stats(bn):
            return None
        members.append(Member(term.i, key, conv, bn, goes_on))
    geometry = {_geometry(m.conv) for m in members}
    if len(geometry) != 1 or next(iter(geometry))[4] != 1:
        return None
    return members


def merged_outputs(group: SharedSource, members: Sequence[Member], x: Tensor, weight: Tensor, bias: Tensor,
                   sizes: Sequence[int], out: Dict[Tuple[int, int], Tensor],
                   conv: Optional[Callable[[Tensor], Tensor]] = None) -> None:
    """Runs the group's first convs as one conv with the stacked folds
    `weight`, `bias` (each member's `sizes` output channels) and puts each
    member's part in `out` under (row, branch), ReLU applied where its
    chain goes on. `conv`, when given, is that conv bound to `x`'s shape
    (pointwise.bound_conv1x1)."""
    if conv is not None:
        y = conv(x)
    elif group.kind == "up":
        y = conv1x1(x, weight, bias)
    else:
        conv = members[0].conv
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
    in_place = not torch.is_grad_enabled()
    for m, part in zip(members, y.split_with_sizes(list(sizes), 1)):
        if m.goes_on:
            part = torch.relu_(part) if in_place else torch.relu(part)
        out[(m.i, group.j)] = part


def merged_first_convs(groups: Sequence[SharedSource], xs: Sequence[Tensor], folds: FoldCache,
                       cacheable: bool = True) -> Dict[Tuple[int, int], Tensor]:
    """{(i, j): the output of row i's first conv on branch j (BN folded,
    ReLU applied where the chain goes on)} for every group that can merge
    now; the terms compute anything else themselves."""
    out: Dict[Tuple[int, int], Tensor] = {}
    for group in groups:
        x = xs[group.j]
        members = members_now(group, x)
        if members is None:
            continue
        folded = [folds.get(m.key, m.conv, m.bn, x.dtype, cacheable) for m in members]
        sources = tuple(t for pair in folded for t in pair)
        weight, bias = folds.derived(("shared", group.j, group.kind, x.dtype), sources,
                                     lambda: (torch.cat([w for w, _ in folded]), torch.cat([b for _, b in folded])),
                                     cacheable)
        merged_outputs(group, members, x, weight, bias, [w.shape[0] for w, _ in folded], out)
    return out
