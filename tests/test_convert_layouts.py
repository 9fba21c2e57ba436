"""Layouts other than timm's and this package's: the official segmentation
repo's module (bilinear F.interpolate in forward, align_corners from a
module-level ALIGN_CORNERS global), and a layout whose mode cannot be read."""
from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hrnet_fast
from hrnet_fast.models import HighResolutionModule
from test_convert_common import pair

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


def _inputs():
    return [torch.randn(2, c, h, w, dtype=torch.float64) for c, h, w in ((4, 11, 9), (8, 6, 5), (12, 3, 3))]


def _build():
    torch.manual_seed(5)
    return SegStyleModule(HighResolutionModule([4, 8, 12], (1, 1, 1), (4, 8, 12), mode="bilinear"))


@pytest.mark.parametrize("align", [True, False])
def test_official_seg_layout_reads_align_corners_global(align, monkeypatch):
    monkeypatch.setattr(seg_src, "ALIGN_CORNERS", align)
    ref, fused = pair(_build())
    fx = hrnet_fast.fused_modules(fused)[0].fused_exchange
    assert (fx.mode, fx.align_corners) == ("bilinear", align)
    xs = _inputs()
    for train in (False, True):
        ref.train(train)
        fused.train(train)
        with torch.no_grad():
            for p, q in zip(ref([t.clone() for t in xs]), fused([t.clone() for t in xs])):
                torch.testing.assert_close(q, p)


def test_unknown_interpolation_needs_mode():
    class Bare(SegStyleModule):
        pass

    Bare.__module__ = __name__  # no ALIGN_CORNERS here, no align_corners attribute
    with pytest.raises(ValueError, match="mode="):
        hrnet_fast.convert(Bare(_build()))
    m = hrnet_fast.convert(Bare(_build()), mode="bilinear", align_corners=True)
    fx = hrnet_fast.fused_modules(m)[0].fused_exchange
    assert (fx.mode, fx.align_corners) == ("bilinear", True)


def test_mode_override_for_forward_interpolation():
    # the own seg module interpolates in forward: an explicit mode wins
    m = hrnet_fast.convert(HighResolutionModule([4, 8], (1, 1), (4, 8), mode="bilinear"), mode="nearest")
    assert hrnet_fast.fused_modules(m)[0].fused_exchange.mode == "nearest"
