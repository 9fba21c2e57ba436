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
- this package's HighResolutionModule, nearest and bilinear;
- mmpose's LiteHRNet: LiteHRModule ("LITE" and "NAIVE"), whose exchange
  doubles row 0 in place and feeds that sum to every later row
  (hrnet_fast.convert.layouts), and the whole LiteHRNet backbone, small.

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


# Lite-HRNet, as mmpose's LiteHRNet backbone builds it (mmpose/models/backbones/litehrnet.py,
# itself from the Lite-HRNet repository): the same module attributes (so the same state_dict
# keys), layers, ReLU placement and inplace flags, and forwards that compute what mmpose's do,
# the exchange's in-place row 0 included. mmcv's ConvModule and DepthwiseSeparableConvModule are
# written out as MMConvModule / MMDepthwiseSeparable with mmcv's attribute names.

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (n, g * c, h, w) -> channels regrouped as (c, g)."""
    n, channels, h, w = x.shape
    x = x.view(n, groups, channels // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, -1, h, w)


class MMConvModule(nn.Module):
    """mmcv's ConvModule: conv [-> norm `bn`] [-> `activate`]; the conv has a bias exactly when there
    is no norm; ReLU runs in place, Sigmoid does not."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, groups=1, norm=True, act="relu"):
        super().__init__()
        self.with_norm = norm
        self.with_activation = act is not None
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=not norm)
        if norm:
            self.norm_name = "bn"
            self.add_module("bn", nn.BatchNorm2d(cout))
        if act is not None:
            self.activate = nn.ReLU(inplace=True) if act == "relu" else nn.Sigmoid()

    @property
    def norm(self):
        return getattr(self, self.norm_name)

    def forward(self, x):
        x = self.conv(x)
        if self.with_norm:
            x = self.norm(x)
        if self.with_activation:
            x = self.activate(x)
        return x


class MMDepthwiseSeparable(nn.Module):
    """mmcv's DepthwiseSeparableConvModule as IterativeHead builds it: a depthwise 3x3 ConvModule
    without activation, then a pointwise one with ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.depthwise_conv = MMConvModule(cin, cin, 3, 1, 1, groups=cin, act=None)
        self.pointwise_conv = MMConvModule(cin, cout, 1)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class LiteSpatialWeighting(nn.Module):
    """Global average -> 1x1 (ReLU) -> 1x1 (Sigmoid), no norm; multiplies its input."""

    def __init__(self, channels, ratio=16):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = MMConvModule(channels, int(channels / ratio), 1, norm=False)
        self.conv2 = MMConvModule(int(channels / ratio), channels, 1, norm=False, act="sigmoid")

    def forward(self, x):
        return x * self.conv2(self.conv1(self.global_avgpool(x)))


class LiteCrossResolutionWeighting(nn.Module):
    """Every branch pooled to the smallest one's size, concatenated, 1x1 (BN, ReLU) -> 1x1 (BN,
    Sigmoid), split back; each branch multiplied by its part, nearest-resized to it."""

    def __init__(self, channels, ratio=16):
        super().__init__()
        self.channels = channels
        total = sum(channels)
        self.conv1 = MMConvModule(total, int(total / ratio), 1)
        self.conv2 = MMConvModule(int(total / ratio), total, 1, act="sigmoid")

    def forward(self, x):
        smallest = x[-1].shape[-2:]
        pooled = [F.adaptive_avg_pool2d(t, smallest) for t in x[:-1]] + [x[-1]]
        weights = torch.split(self.conv2(self.conv1(torch.cat(pooled, dim=1))), self.channels, dim=1)
        return [t * F.interpolate(w, size=t.shape[-2:], mode="nearest") for t, w in zip(x, weights)]


class LiteConditionalChannelWeighting(nn.Module):
    """A LITE block on the whole branch list: each branch split in halves; the second halves
    weighted across resolutions, depthwise 3x3 + BN, weighted spatially; the halves concatenated and
    shuffled. `spatial_ratio` is mmpose's fixed 4; the tiny test layout lowers it, whose 2-channel
    halves would otherwise get 0-channel convolutions."""

    def __init__(self, in_channels, stride, reduce_ratio, spatial_ratio=4):
        super().__init__()
        self.with_cp = False
        self.stride = stride
        halves = [c // 2 for c in in_channels]
        self.cross_resolution_weighting = LiteCrossResolutionWeighting(halves, ratio=reduce_ratio)
        self.depthwise_convs = nn.ModuleList(MMConvModule(c, c, 3, stride, 1, groups=c, act=None) for c in halves)
        self.spatial_weighting = nn.ModuleList(LiteSpatialWeighting(c, ratio=spatial_ratio) for c in halves)

    def forward(self, x):
        parts = [t.chunk(2, dim=1) for t in x]
        kept = [p[0] for p in parts]
        weighted = self.cross_resolution_weighting([p[1] for p in parts])
        weighted = [conv(t) for t, conv in zip(weighted, self.depthwise_convs)]
        weighted = [sw(t) for t, sw in zip(weighted, self.spatial_weighting)]
        return [channel_shuffle(torch.cat([a, b], dim=1), 2) for a, b in zip(kept, weighted)]


class LiteShuffleUnit(nn.Module):
    """ShuffleNetV2's unit (mmpose's ShuffleUnit): at stride 1 the second half goes through 1x1
    (ReLU) -> depthwise 3x3 -> 1x1 (ReLU) and the halves are shuffled; at stride 2 both paths
    downsample the whole input."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.stride = stride
        self.with_cp = False
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(MMConvModule(cin, cin, 3, stride, 1, groups=cin, act=None),
                                         MMConvModule(cin, half, 1))
        self.branch2 = nn.Sequential(MMConvModule(cin if stride > 1 else half, half, 1),
                                     MMConvModule(half, half, 3, stride, 1, groups=half, act=None),
                                     MMConvModule(half, half, 1))

    def forward(self, x):
        if self.stride > 1:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        else:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), dim=1)
        return channel_shuffle(out, 2)


def _lite_fuse_layers(channels: Sequence[int], rows: int) -> nn.ModuleList:
    """Lite-HRNet's fuse layers: from a coarser branch 1x1 conv + BN + nearest upsample; from a
    finer one a chain of (depthwise 3x3 stride 2 + BN, 1x1 + BN) links, ReLU in place after every
    link but the last, whose 1x1 goes to the row's channels; None on the diagonal."""
    fuse = []
    for i in range(rows):
        row = []
        for j, cj in enumerate(channels):
            if j > i:
                row.append(nn.Sequential(nn.Conv2d(cj, channels[i], 1, bias=False), nn.BatchNorm2d(channels[i]),
                                         nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
            elif j == i:
                row.append(None)
            else:
                links = []
                for k in range(i - j):
                    last = k == i - j - 1
                    cout = channels[i] if last else cj
                    link = [nn.Conv2d(cj, cj, 3, 2, 1, groups=cj, bias=False), nn.BatchNorm2d(cj),
                            nn.Conv2d(cj, cout, 1, bias=False), nn.BatchNorm2d(cout)]
                    links.append(nn.Sequential(*link) if last else nn.Sequential(*link, nn.ReLU(inplace=True)))
                row.append(nn.Sequential(*links))
        fuse.append(nn.ModuleList(row))
    return nn.ModuleList(fuse)


class LiteHRModule(nn.Module):
    """mmpose's LiteHRModule: `layers` ("LITE": weighting blocks on the whole list; "NAIVE": a
    Sequential of shuffle units per branch, written back into the caller's list), then, with_fuse,
    its exchange (see its forward)."""

    def __init__(self, num_branches, num_blocks, in_channels, reduce_ratio, module_type, multiscale_output=False,
                 with_fuse=True, spatial_ratio=4):
        super().__init__()
        if num_branches != len(in_channels):
            raise ValueError(f"NUM_BRANCHES({num_branches}) != NUM_INCHANNELS({len(in_channels)})")
        self.in_channels = in_channels
        self.num_branches = num_branches
        self.module_type = module_type
        self.multiscale_output = multiscale_output
        self.with_fuse = with_fuse
        self.norm_cfg = dict(type="BN")
        self.conv_cfg = None
        self.with_cp = False
        if module_type.upper() == "LITE":
            self.layers = nn.Sequential(*(LiteConditionalChannelWeighting(in_channels, 1, reduce_ratio, spatial_ratio)
                                          for _ in range(num_blocks)))
        elif module_type.upper() == "NAIVE":
            self.layers = nn.ModuleList(nn.Sequential(*(LiteShuffleUnit(c, c) for _ in range(num_blocks)))
                                        for c in in_channels)
        else:
            raise ValueError("module_type should be either 'LITE' or 'NAIVE'.")
        if with_fuse:
            self.fuse_layers = None if num_branches == 1 else \
                _lite_fuse_layers(in_channels, num_branches if multiscale_output else 1)
            self.relu = nn.ReLU()

    def forward(self, x):
        if self.num_branches == 1:
            return [self.layers[0](x[0])]
        if self.module_type.upper() == "LITE":
            out = self.layers(x)
        else:
            for k in range(self.num_branches):
                x[k] = self.layers[k](x[k])
            out = x
        if self.with_fuse:
            fused = []
            for i in range(len(self.fuse_layers)):
                # Row 0 starts from out[0] itself: the j == 0 step doubles it in place, and out[0]
                # then holds row 0's sum before its ReLU, which every later row reads (twice).
                acc = out[0] if i == 0 else self.fuse_layers[i][0](out[0])
                for j in range(self.num_branches):
                    acc += out[j] if i == j else self.fuse_layers[i][j](out[j])
                fused.append(self.relu(acc))
            out = fused
        if not self.multiscale_output:
            out = [out[0]]
        return out


class LiteStem(nn.Module):
    """Lite-HRNet's stem: 3x3 stride-2 conv, then a ShuffleNet-like stride-2 unit on its halves."""

    def __init__(self, in_channels, stem_channels, out_channels, expand_ratio):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.with_cp = False
        self.conv1 = MMConvModule(in_channels, stem_channels, 3, 2, 1)
        mid = int(round(stem_channels * expand_ratio))
        half = stem_channels // 2
        grown = out_channels - half if stem_channels == out_channels else out_channels - stem_channels
        self.branch1 = nn.Sequential(MMConvModule(half, half, 3, 2, 1, groups=half, act=None),
                                     MMConvModule(half, grown, 1))
        self.expand_conv = MMConvModule(half, mid, 1)
        self.depthwise_conv = MMConvModule(mid, mid, 3, 2, 1, groups=mid, act=None)
        self.linear_conv = MMConvModule(mid, half if stem_channels == out_channels else stem_channels, 1)

    def forward(self, x):
        a, b = self.conv1(x).chunk(2, dim=1)
        b = self.linear_conv(self.depthwise_conv(self.expand_conv(b)))
        return channel_shuffle(torch.cat((self.branch1(a), b), dim=1), 2)


class LiteIterativeHead(nn.Module):
    """From the coarsest branch up: each branch plus the previous result bilinearly resized to it
    (align_corners=True), through a depthwise-separable conv to the next finer branch's channels."""

    def __init__(self, in_channels):
        super().__init__()
        self.in_channels = in_channels[::-1]
        c = self.in_channels
        self.projects = nn.ModuleList(MMDepthwiseSeparable(c[k], c[k + 1] if k + 1 < len(c) else c[k])
                                      for k in range(len(c)))

    def forward(self, x):
        ys, last = [], None
        for k, t in enumerate(x[::-1]):
            if last is not None:
                t = t + F.interpolate(last, size=t.shape[-2:], mode="bilinear", align_corners=True)
            last = self.projects[k](t)
            ys.append(last)
        return ys[::-1]


def _lite_transition(before: Sequence[int], after: Sequence[int]) -> nn.ModuleList:
    """Lite-HRNet's transitions: a depthwise-separable 3x3 + ReLU where a kept branch changes width
    (None where it does not); for each new branch a chain of stride-2 ones from the last branch."""
    layers = []
    for i, cout in enumerate(after):
        if i < len(before):
            cin = before[i]
            layers.append(None if cin == cout else nn.Sequential(
                nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()))
            continue
        links = []
        for k in range(i + 1 - len(before)):
            cin = before[-1]
            out = cout if k == i - len(before) else cin
            links.append(nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                       nn.Conv2d(cin, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()))
        layers.append(nn.Sequential(*links))
    return nn.ModuleList(layers)


LITE_EXTRA = dict(
    stem=dict(stem_channels=16, out_channels=16, expand_ratio=1),
    num_stages=3,
    stages_spec=dict(num_modules=(2, 1, 1), num_branches=(2, 3, 4), num_blocks=(1, 1, 1),
                     module_type=("LITE", "NAIVE", "LITE"), with_fuse=(True, True, True), reduce_ratios=(8, 8, 8),
                     num_channels=((16, 32), (16, 32, 64), (16, 32, 64, 128))),
    with_head=True)


class LiteHRNet(nn.Module):
    """mmpose's LiteHRNet backbone: stem, then per stage `transition{i}` and `stage{i}` (a
    Sequential of multiscale LiteHRModules), the iterative head; returns [the finest output]."""

    def __init__(self, extra=LITE_EXTRA, in_channels=3, norm_eval=False):
        super().__init__()
        self.extra = extra
        self.norm_eval = norm_eval
        self.with_cp = False
        self.stem = LiteStem(in_channels, **extra["stem"])
        self.num_stages = extra["num_stages"]
        self.stages_spec = spec = extra["stages_spec"]
        widths = [self.stem.out_channels]
        for i in range(self.num_stages):
            channels = list(spec["num_channels"][i])
            setattr(self, f"transition{i}", _lite_transition(widths, channels))
            modules = [LiteHRModule(spec["num_branches"][i], spec["num_blocks"][i], channels, spec["reduce_ratios"][i],
                                    spec["module_type"][i], multiscale_output=True, with_fuse=spec["with_fuse"][i])
                       for _ in range(spec["num_modules"][i])]
            setattr(self, f"stage{i}", nn.Sequential(*modules))
            widths = channels
        self.with_head = extra["with_head"]
        if self.with_head:
            self.head_layer = LiteIterativeHead(widths)

    def forward(self, x):
        ys = [self.stem(x)]
        for i in range(self.num_stages):
            transition = getattr(self, f"transition{i}")
            xs = []
            for j in range(self.stages_spec["num_branches"][i]):
                if transition[j]:
                    xs.append(transition[j](ys[-1] if j >= len(ys) else ys[j]))
                else:
                    xs.append(ys[j])
            ys = getattr(self, f"stage{i}")(xs)
        if self.with_head:
            ys = self.head_layer(ys)
        return [ys[0]]

    def train(self, mode=True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()


def lite_module(channels: Sequence[int], module_type: str = "LITE", multiscale_output: bool = True) -> nn.Module:
    """One LiteHRModule of a block per branch over `channels` (reduce ratio 8, as mmpose's configs)."""
    return LiteHRModule(len(channels), 1, list(channels), 8, module_type, multiscale_output=multiscale_output,
                        spatial_ratio=1 if min(channels) < 8 else 4)


LAYOUTS.update(lite=lite_module, lite_naive=lambda c: lite_module(c, "NAIVE"))
SIZES.update(lite=_HALVES, lite_naive=_HALVES)
