"""The official segmentation repository's module layout (HRNet-OCR branch),
shared by the convert and optimize tests: fuse_layers[i][i] is None, the
coarse layers are conv+BN, and forward resizes them bilinearly with the
module-level ALIGN_CORNERS global."""
from __future__ import annotations

import sys
import types

import torch.nn as nn
import torch.nn.functional as F

from hrnet_fast.models import HighResolutionModule

# A stand-in for lib/models/seg_hrnet.py: the class lives in a module that
# has the ALIGN_CORNERS global its constructor sets from the config.
seg_src = types.ModuleType("fake_seg_hrnet")
seg_src.ALIGN_CORNERS = True
sys.modules[seg_src.__name__] = seg_src


class SegStyleModule(nn.Module):
    """Official-seg-style exchange: fuse_layers[i][i] is None, the coarse
    layers are conv+BN and forward resizes them bilinearly by size."""

    def __init__(self, src: HighResolutionModule):
        super().__init__()
        self.num_branches = src.num_branches
        self.branches = src.branches
        self.fuse_layers = src.fuse_layers
        self.relu = nn.ReLU(False)

    def forward(self, x):
        for i in range(self.num_branches):
            x[i] = self.branches[i](x[i])
        out = []
        for i in range(len(self.fuse_layers)):
            y = x[0] if i == 0 else self.fuse_layers[i][0](x[0])
            for j in range(1, self.num_branches):
                if i == j:
                    y = y + x[j]
                elif j > i:
                    y = y + F.interpolate(self.fuse_layers[i][j](x[j]), size=x[i].shape[-2:], mode="bilinear",
                                          align_corners=sys.modules[type(self).__module__].ALIGN_CORNERS)
                else:
                    y = y + self.fuse_layers[i][j](x[j])
            out.append(self.relu(y))
        return out


SegStyleModule.__module__ = seg_src.__name__
