"""Exchange modules written to match real client layouts that this
project's CI cannot install (mmsegmentation needs compiled mmcv ops):

- MMSegHRModule: mmseg 1.x's HRModule -- up-branches end in mmseg's own
  `Upsample` (size-based, floor(h * scale_factor)), and forward resizes
  every up-branch to the branch size with bilinear `resize`;
- MMPoseHRModule: mmpose's HRModule -- nn.Upsample(scale_factor, mode) with
  no resize in forward;
- OfficialSegV11Module: the official segmentation repository's
  pytorch-v1.1 branch -- conv + BN up-branches, `F.interpolate(...,
  mode='bilinear')` in forward with no align_corners argument.

Each takes its branches and channel counts from arguments and builds its
fuse layers as the original does (structure, ReLU placement, inplace
flags), so the key layout and every computation match.
"""
from __future__ import annotations

from typing import List, Sequence

import torch.nn as nn
import torch.nn.functional as F


def resize(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """mmseg.models.utils.resize without its warning."""
    return F.interpolate(input, size, scale_factor, mode, align_corners)


class Upsample(nn.Module):
    """mmseg.models.utils.Upsample: a size-based resize to `size` or to
    int(h * scale_factor)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size = size
        self.scale_factor = float(scale_factor) if scale_factor else None
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x):
        if not self.size:
            size = [int(t * self.scale_factor) for t in x.shape[-2:]]
        else:
            size = self.size
        return resize(x, size, None, self.mode, self.align_corners)


def _branches(channels: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
                         for c in channels)


def _down(cin: int, cout: int, steps: int, relu_inplace: bool) -> nn.Sequential:
    links = []
    for k in range(steps):
        last = k == steps - 1
        layers = [nn.Conv2d(cin, cout if last else cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cout if last else cin)]
        if not last:
            layers.append(nn.ReLU(inplace=relu_inplace))
        links.append(nn.Sequential(*layers))
    return nn.Sequential(*links)


class _Base(nn.Module):
    def __init__(self, channels: Sequence[int], up) -> None:
        super().__init__()
        self.num_branches = len(channels)
        self.branches = _branches(channels)
        rows = []
        for i, ci in enumerate(channels):
            row: List = []
            for j, cj in enumerate(channels):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(cj, ci, 1, 1, 0, bias=False), nn.BatchNorm2d(ci),
                                             *up(2 ** (j - i))))
                elif j == i:
                    row.append(None)
                else:
                    row.append(_down(cj, ci, i - j, relu_inplace=self.relu_inplace))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)
        self.relu = nn.ReLU(inplace=False)


class MMSegHRModule(_Base):
    relu_inplace = False

    def __init__(self, channels: Sequence[int]):
        super().__init__(channels, lambda s: [Upsample(scale_factor=s, mode="bilinear", align_corners=False)])

    def forward(self, x):
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        for i in range(self.num_branches):
            x[i] = self.branches[i](x[i])
        x_fuse = []
        for i in range(len(self.fuse_layers)):
            y = 0
            for j in range(self.num_branches):
                if i == j:
                    y += x[j]
                elif j > i:
                    y = y + resize(self.fuse_layers[i][j](x[j]), size=x[i].shape[2:], mode="bilinear",
                                   align_corners=False)
                else:
                    y += self.fuse_layers[i][j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse


class MMPoseHRModule(_Base):
    relu_inplace = True

    def __init__(self, channels: Sequence[int], mode: str = "nearest", align_corners=None):
        super().__init__(channels, lambda s: [nn.Upsample(scale_factor=s, mode=mode, align_corners=align_corners)])

    def forward(self, x):
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        for i in range(self.num_branches):
            x[i] = self.branches[i](x[i])
        x_fuse = []
        for i in range(len(self.fuse_layers)):
            y = 0
            for j in range(self.num_branches):
                if i == j:
                    y += x[j]
                else:
                    y += self.fuse_layers[i][j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse


class OfficialSegV11Module(_Base):
    relu_inplace = True

    def __init__(self, channels: Sequence[int]):
        super().__init__(channels, lambda s: [])

    def forward(self, x):
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        for i in range(self.num_branches):
            x[i] = self.branches[i](x[i])
        x_fuse = []
        for i in range(len(self.fuse_layers)):
            y = x[0] if i == 0 else self.fuse_layers[i][0](x[0])
            for j in range(1, self.num_branches):
                if i == j:
                    y = y + x[j]
                elif j > i:
                    width_output = x[i].shape[-1]
                    height_output = x[i].shape[-2]
                    y = y + F.interpolate(self.fuse_layers[i][j](x[j]), size=[height_output, width_output],
                                          mode='bilinear')
                else:
                    y = y + self.fuse_layers[i][j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse
