"""HRNet segmentation and pose models with the official state_dict layout
(conv1, bn1, conv2, bn2, layer1, transition1..3, stage2..4, then
last_layer for segmentation or final_layer for pose).

Example:
    >>> import torch
    >>> from hrnet_fast.models.hrnet import HRNetPose
    >>> HRNetPose("w18_small_v1", num_joints=17)(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 17, 16, 16])
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .blocks import BLOCKS, BN_MOMENTUM, make_layer
from .configs import ARCHS, StageConfig
from .hrmodule import HighResolutionModule


def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Adapts the previous stage's branches to the next stage's; new branches
    come from the coarsest old one through stride-2 3x3 convs. None where the
    branch passes through unchanged (official layout)."""
    layers: List[Optional[nn.Module]] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            if c != pre[i]:
                layers.append(nn.Sequential(nn.Conv2d(pre[i], c, 3, 1, 1, bias=False),
                                            nn.BatchNorm2d(c, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)))
            else:
                layers.append(None)
        else:
            links = []
            for k in range(i + 1 - len(pre)):
                cin = pre[-1]
                cout = c if k == i - len(pre) else cin
                links.append(nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False),
                                           nn.BatchNorm2d(cout, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*links))
    return nn.ModuleList(layers)


class HRNetBackbone(nn.Module):
    """Stem, stage 1 and the multi-branch stages 2-4; returns the list of
    branch outputs of stage 4."""

    def __init__(self, arch: str, mode: str, align_corners: bool = False, multi_scale_output: bool = True):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown HRNet arch {arch!r}; expected one of {sorted(ARCHS)}")
        cfg = ARCHS[arch]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

        s1 = cfg["stage1"]
        block1 = BLOCKS[s1.block]
        self.layer1 = make_layer(block1, 64, s1.channels[0], s1.num_blocks[0])
        pre = [s1.channels[0] * block1.expansion]
        for n in (2, 3, 4):
            sc: StageConfig = cfg[f"stage{n}"]
            cur = [c * BLOCKS[sc.block].expansion for c in sc.channels]
            setattr(self, f"transition{n - 1}", _transition(pre, cur))
            modules = []
            for m in range(sc.num_modules):
                last = n == 4 and m == sc.num_modules - 1
                hr = HighResolutionModule(cur if m == 0 else modules[-1].num_inchannels, sc.num_blocks,
                                          sc.channels, sc.block, multi_scale_output or not last, mode,
                                          align_corners)
                modules.append(hr)
            setattr(self, f"stage{n}", nn.Sequential(*modules))
            pre = modules[-1].num_inchannels
        self.out_channels = pre

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        ys = [x]
        for n in (2, 3, 4):
            transition = getattr(self, f"transition{n - 1}")
            xs = []
            for i, t in enumerate(transition):
                src = ys[i] if i < len(ys) else ys[-1]
                xs.append(src if t is None else t(src))
            ys = getattr(self, f"stage{n}")(xs)
        return ys


class HRNetSeg(HRNetBackbone):
    """HRNetV2 segmentation: bilinear exchange, all branches upsampled to
    1/4 resolution and concatenated, then `last_layer`. Output at 1/4."""

    def __init__(self, arch: str, num_classes: int = 19, align_corners: bool = False):
        super().__init__(arch, "bilinear", align_corners)
        self.align_corners = align_corners
        c = sum(self.out_channels)
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(c, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_classes, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x: Tensor) -> Tensor:
        ys = self.forward_stages(x)
        size = ys[0].shape[-2:]
        ups = [ys[0]] + [F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners)
                         for y in ys[1:]]
        return self.last_layer(torch.cat(ups, 1))


class HRNetPose(HRNetBackbone):
    """SimpleBaseline-style HRNet pose: nearest exchange, stage 4 keeps only
    the highest-resolution output, `final_layer` maps it to heatmaps."""

    def __init__(self, arch: str, num_joints: int = 17):
        super().__init__(arch, "nearest", multi_scale_output=False)
        self.final_layer = nn.Conv2d(self.out_channels[0], num_joints, kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.final_layer(self.forward_stages(x)[0])
