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

from typing import Dict, List, NamedTuple, Sequence, Tuple

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


def merged_first_convs(groups: Sequence[SharedSource], xs: Sequence[Tensor], folds: FoldCache
                       ) -> Dict[Tuple[int, int], Tensor]:
    """{(i, j): the output of row i's first conv on branch j (BN folded,
    ReLU applied where the chain goes on)} for every group that can merge
    now; the terms compute anything else themselves."""
    out: Dict[Tuple[int, int], Tensor] = {}
    for group in groups:
        x = xs[group.j]
        if x.device.type != "cpu" or not x.is_contiguous():
            continue
        members = []
        for term in group.terms:
            if group.kind == "up":
                link, key, goes_on = term.layer, (term.i, term.j), False
                if term.hooked():
                    break
            else:
                links = term.links
                link, goes_on = links[0], len(links) > 1
                key = (term.i, term.j, 0) if goes_on else (term.i, term.j)
                if has_hooks(term.layer, link, *link):
                    break
            conv, bn = link[0], link[1]
            if uses_batch_stats(bn):
                break
            members.append((term.i, key, conv, bn, goes_on))
        else:
            geometry = {_geometry(m[2]) for m in members}
            if len(geometry) != 1 or next(iter(geometry))[4] != 1:
                continue
            folded = [folds.get(key, conv, bn, x.dtype) for _, key, conv, bn, _ in members]
            sources = tuple(t for pair in folded for t in pair)
            weight, bias = folds.derived(("shared", group.j, group.kind, x.dtype), sources,
                                         lambda: (torch.cat([w for w, _ in folded]), torch.cat([b for _, b in folded])))
            if group.kind == "up":
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
