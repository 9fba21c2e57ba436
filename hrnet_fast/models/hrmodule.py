"""The multi-branch HRNet module in the official layout: parallel `branches`
then the exchange through `fuse_layers`.

Two upsampling styles, as in the official repositories:
- mode="nearest" (pose repo): the coarse-to-fine fuse layers end in
  nn.Upsample(scale_factor=2**(j-i)), so sizes must divide evenly;
- mode="bilinear" (segmentation repo): the fuse layers are conv+BN only and
  forward resizes with F.interpolate(size=...), so any input size works.

Example:
    >>> import torch
    >>> from hrnet_fast.models.hrmodule import HighResolutionModule
    >>> m = HighResolutionModule([8, 16], num_blocks=(1, 1), channels=(8, 16))
    >>> [y.shape[1] for y in m([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])]
    [8, 16]
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .blocks import BLOCKS, BN_MOMENTUM, make_layer


def make_fuse_layers(channels: Sequence[int], rows: int, up: Callable[[int], List[nn.Module]],
                     relu_inplace: bool = True) -> nn.ModuleList:
    """HRNet's fuse layers in the official layout, `rows` output branches:
    conv 1x1 + BN [+ `up(2 ** (j - i))`] from each coarser branch j, chains
    of stride-2 conv 3x3 + BN [+ ReLU] from each finer one, None for the
    branch itself."""
    fuse = []
    for i in range(rows):
        row: List[Optional[nn.Module]] = []
        for j, cj in enumerate(channels):
            if j > i:
                row.append(nn.Sequential(nn.Conv2d(cj, channels[i], 1, 1, 0, bias=False),
                                         nn.BatchNorm2d(channels[i], momentum=BN_MOMENTUM), *up(2 ** (j - i))))
            elif j == i:
                row.append(None)
            else:
                links = []
                for k in range(i - j):
                    cout = channels[i] if k == i - j - 1 else cj
                    link = [nn.Conv2d(cj, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
                    if k < i - j - 1:
                        link.append(nn.ReLU(inplace=relu_inplace))
                    links.append(nn.Sequential(*link))
                row.append(nn.Sequential(*links))
        fuse.append(nn.ModuleList(row))
    return nn.ModuleList(fuse)


class HighResolutionModule(nn.Module):
    # How hrnet_fast.convert reads this layout: forward builds a new list
    # of branch outputs rather than writing them into the caller's, and
    # resizes the coarse branches only in bilinear mode.
    writes_branches_back = False

    @property
    def resizes_in_forward(self) -> bool:
        return self.mode == "bilinear"

    def __init__(
        self,
        in_channels: Sequence[int],
        num_blocks: Sequence[int],
        channels: Sequence[int],
        block: str = "BASIC",
        multi_scale_output: bool = True,
        mode: str = "nearest",
        align_corners: bool = False,
    ):
        super().__init__()
        if not len(in_channels) == len(num_blocks) == len(channels):
            raise ValueError("in_channels, num_blocks and channels need one entry per branch")
        block_type = BLOCKS[block]
        self.num_branches = len(channels)
        self.multi_scale_output = multi_scale_output
        self.mode = mode
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            make_layer(block_type, in_channels[i], channels[i], num_blocks[i]) for i in range(self.num_branches))
        self.num_inchannels = [c * block_type.expansion for c in channels]
        self.fuse_layers = None if self.num_branches == 1 else make_fuse_layers(
            self.num_inchannels, self.num_branches if multi_scale_output else 1,
            lambda s: [nn.Upsample(scale_factor=s, mode="nearest")] if mode == "nearest" else [])
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(t) for branch, t in zip(self.branches, x)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y: Optional[Tensor] = None
            for j, layer in enumerate(row):
                if j == i:
                    t = x[j]
                else:
                    t = layer(x[j])
                    if j > i and self.mode == "bilinear":
                        t = F.interpolate(t, size=x[i].shape[-2:], mode="bilinear",
                                          align_corners=self.align_corners)
                y = t if y is None else y + t
            out.append(self.relu(y))
        return out
