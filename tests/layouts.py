"""Every HRNet module layout `convert` accepts, built small, in one place.

Layouts this project's CI cannot install (mmsegmentation needs compiled mmcv
ops; the official repositories are not packages) are written here to match
the originals: structure, ReLU placement and inplace flags, and the forward's
resize calls, so the key layout and every computation match.

- timm: timm.models.hrnet.HighResolutionModule itself;
- official pose / classification repositories: nn.Upsample(scale_factor)
  up-branches, `y = x[0] if i == 0 else fuse_layers[i][0](x[0])`;
- official segmentation repository, HRNet-OCR branch: conv + BN up-branches,
  bilinear F.interpolate in forward with align_corners from the module-level
  ALIGN_CORNERS global;
- official segmentation repository, pytorch-v1.1 branch: the same with no
  align_corners argument;
- mmseg 1.x HRModule: up-branches end in mmseg's own size-based `Upsample`,
  and forward resizes every up-branch to the branch size with `resize`;
- mmpose HRModule (mmdet's is the same): nn.Upsample(scale_factor, mode);
- this package's HighResolutionModule, nearest and bilinear.

`LAYOUTS[name](channels)` builds one; `SIZES[name]` are branch sizes it
accepts (odd ones wherever the layout allows them).
"""
from __future__ import annotations

import sys
import types
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm.models.hrnet as timm_hrnet
import timm.models.resnet as timm_resnet
import torch
import torch.nn as nn
import torch.nn.functional as F

from hrnet_fast.models import HighResolutionModule
from hrnet_fast.models.hrmodule import make_fuse_layers


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


def plain_branches(channels: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
                         for c in channels)


class _Base(nn.Module):
    relu_inplace = True

    def __init__(self, channels: Sequence[int], up, branches: Optional[nn.ModuleList] = None) -> None:
        super().__init__()
        self.num_branches = len(channels)
        self.branches = branches if branches is not None else plain_branches(channels)
        self.fuse_layers = make_fuse_layers(channels, len(channels), up, self.relu_inplace)
        self.relu = nn.ReLU(inplace=False)

    def exchange(self, x, coarser):
        """The branches (written back into `x`, as the originals do), then
        every row summed and ReLU'd: x_i itself, the fuse layer of each finer
        branch, `coarser(i, j)` for each coarser one."""
        for i in range(self.num_branches):
            x[i] = self.branches[i](x[i])
        x_fuse = []
        for i in range(len(self.fuse_layers)):
            y = 0
            for j in range(self.num_branches):
                y = y + (x[j] if i == j else coarser(i, j) if j > i else self.fuse_layers[i][j](x[j]))
            x_fuse.append(self.relu(y))
        return x_fuse


class MMSegHRModule(_Base):
    relu_inplace = False

    def __init__(self, channels: Sequence[int], branches: Optional[nn.ModuleList] = None):
        super().__init__(channels, lambda s: [Upsample(scale_factor=s, mode="bilinear", align_corners=False)],
                         branches)

    def forward(self, x):
        return self.exchange(x, lambda i, j: resize(self.fuse_layers[i][j](x[j]), size=x[i].shape[2:],
                                                    mode="bilinear", align_corners=False))


class MMPoseHRModule(_Base):
    def __init__(self, channels: Sequence[int], mode: str = "nearest", align_corners=None):
        super().__init__(channels, lambda s: [nn.Upsample(scale_factor=s, mode=mode, align_corners=align_corners)])

    def forward(self, x):
        return self.exchange(x, lambda i, j: self.fuse_layers[i][j](x[j]))


class OfficialPoseModule(MMPoseHRModule):
    """The official pose and classification repositories' module: the same
    layers and sums as mmpose's."""

    def __init__(self, channels: Sequence[int]):
        super().__init__(channels, "nearest")


class OfficialSegV11Module(_Base):
    """The official segmentation repository's pytorch-v1.1 branch."""

    def __init__(self, channels: Sequence[int]):
        super().__init__(channels, lambda s: [])

    def forward(self, x):
        return self.exchange(x, lambda i, j: F.interpolate(self.fuse_layers[i][j](x[j]),
                                                           size=[x[i].shape[-2], x[i].shape[-1]], mode='bilinear'))


# The official segmentation repository's HRNet-OCR branch: the class lives in
# a module with the ALIGN_CORNERS global its constructor sets from the config.
seg_src = types.ModuleType("fake_seg_hrnet")
seg_src.ALIGN_CORNERS = True
sys.modules[seg_src.__name__] = seg_src


class OfficialSegModule(_Base):
    """The official segmentation repository's module (HRNet-OCR branch)."""

    def __init__(self, channels: Sequence[int], branches: Optional[nn.ModuleList] = None):
        super().__init__(channels, lambda s: [], branches)

    def forward(self, x):
        return self.exchange(x, lambda i, j: F.interpolate(
            self.fuse_layers[i][j](x[j]), size=x[i].shape[-2:], mode="bilinear",
            align_corners=sys.modules[type(self).__module__].ALIGN_CORNERS))


OfficialSegModule.__module__ = seg_src.__name__


def timm_module(channels: Sequence[int]) -> nn.Module:
    n = len(channels)
    return timm_hrnet.HighResolutionModule(n, timm_resnet.BasicBlock, (1,) * n, list(channels), tuple(channels),
                                           "SUM")


def own_module(channels: Sequence[int], mode: str, align_corners: bool = False) -> nn.Module:
    n = len(channels)
    return HighResolutionModule(list(channels), (1,) * n, list(channels), mode=mode, align_corners=align_corners)


LAYOUTS: Dict[str, Callable[[Sequence[int]], nn.Module]] = {
    "timm": timm_module,
    "official_pose": OfficialPoseModule,
    "official_seg": OfficialSegModule,
    "official_seg_v11": OfficialSegV11Module,
    "mmseg": MMSegHRModule,
    "mmpose": MMPoseHRModule,
    "own_nearest": lambda c: own_module(c, "nearest"),
    "own_bilinear": lambda c: own_module(c, "bilinear", align_corners=True),
}

# Branch sizes as a stride-2 stem and transitions give them. Nearest
# layouts upsample by scale factors, so each branch is exactly half the one
# above (odd at the coarsest); the others take any size: odd everywhere.
_HALVES: List[Tuple[int, int]] = [(12, 20), (6, 10), (3, 5)]
_ODD: List[Tuple[int, int]] = [(13, 11), (7, 6), (4, 3)]
SIZES: Dict[str, List[Tuple[int, int]]] = {
    name: _HALVES if name in ("timm", "official_pose", "mmpose", "own_nearest") else _ODD for name in LAYOUTS}
CHANNELS = (4, 6, 8)


# mmseg's whole backbone, small: mmcv / mmseg style BasicBlock with norm1/norm2 properties over bn1/bn2,
# with_cp; an HRModule whose coarse fuse layers end in an Upsample module
# and whose forward resizes again to the finer branch's size (two
# resamplings at odd sizes).

class MMNorms:
    """mmcv's way to name norm layers: norm1 / norm2 properties over bn1 / bn2."""

    @property
    def norm1(self):
        return getattr(self, self.norm1_name)

    @property
    def norm2(self):
        return getattr(self, self.norm2_name)


class MMBasicBlock(MMNorms, nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.norm1_name, self.norm2_name = "bn1", "bn2"
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.add_module(self.norm1_name, nn.BatchNorm2d(planes))
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.add_module(self.norm2_name, nn.BatchNorm2d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = False

    def forward(self, x):
        def _inner_forward(x):
            identity = x
            out = self.conv1(x)
            out = self.norm1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.norm2(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return out

        if self.with_cp and x.requires_grad:
            out = torch.utils.checkpoint.checkpoint(_inner_forward, x)
        else:
            out = _inner_forward(x)
        return self.relu(out)


def _mm_module(channels):
    """mmseg's HRModule with two of its BasicBlocks per branch."""
    return MMSegHRModule(channels, nn.ModuleList(nn.Sequential(MMBasicBlock(c, c), MMBasicBlock(c, c))
                                                 for c in channels))


class MMBackbone(MMNorms, nn.Module):
    """mmseg's HRNet backbone shape: norm1/norm2 properties on the stem,
    transitions, stages of HRModules, returns the branch list."""

    def __init__(self):
        super().__init__()
        self.norm1_name, self.norm2_name = "bn1", "bn2"
        self.conv1 = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.add_module("bn1", nn.BatchNorm2d(16))
        self.conv2 = nn.Conv2d(16, 16, 3, 2, 1, bias=False)
        self.add_module("bn2", nn.BatchNorm2d(16))
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.layer1 = nn.Sequential(MMBasicBlock(16, 32, downsample=down))
        self.transition1 = nn.ModuleList([nn.Sequential(nn.Conv2d(32, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                                        nn.ReLU(inplace=True)),
                                          nn.Sequential(nn.Sequential(nn.Conv2d(32, 16, 3, 2, 1, bias=False),
                                                                      nn.BatchNorm2d(16), nn.ReLU(inplace=True)))])
        self.stage2 = nn.Sequential(_mm_module([8, 16]))
        self.transition2 = nn.ModuleList([None, None, nn.Sequential(nn.Sequential(
            nn.Conv2d(16, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True)))])
        self.stage3 = nn.Sequential(_mm_module([8, 16, 24]))

    def forward(self, x):
        x = self.relu(self.norm1(self.conv1(x)))
        x = self.relu(self.norm2(self.conv2(x)))
        x = self.layer1(x)
        x_list = [self.transition1[i](x) for i in range(2)]
        y_list = self.stage2(x_list)
        x_list = []
        for i in range(3):
            if self.transition2[i] is not None:
                x_list.append(self.transition2[i](y_list[-1]))
            else:
                x_list.append(y_list[i])
        return self.stage3(x_list)
