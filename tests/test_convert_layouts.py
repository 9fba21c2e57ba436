"""Layouts other than timm's and this package's: the official segmentation
repo's module (bilinear F.interpolate in forward, align_corners from a
module-level ALIGN_CORNERS global), and a layout whose mode cannot be read."""
from __future__ import annotations


import pytest
import torch

import hrnet_fast
from hrnet_fast.models import HighResolutionModule
from test_convert_common import pair

from layouts import OfficialSegModule, seg_src


def _inputs():
    return [torch.randn(2, c, h, w, dtype=torch.float64) for c, h, w in ((4, 11, 9), (8, 6, 5), (12, 3, 3))]


def _build():
    torch.manual_seed(5)
    return OfficialSegModule([4, 8, 12], HighResolutionModule([4, 8, 12], (1, 1, 1), (4, 8, 12)).branches)


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
    class Bare(OfficialSegModule):
        pass

    Bare.__module__ = __name__  # no ALIGN_CORNERS here, no align_corners attribute
    with pytest.raises(ValueError, match="mode="):
        hrnet_fast.convert(Bare([4, 8, 12]))
    m = hrnet_fast.convert(Bare([4, 8, 12]), mode="bilinear", align_corners=True)
    fx = hrnet_fast.fused_modules(m)[0].fused_exchange
    assert (fx.mode, fx.align_corners) == ("bilinear", True)


def test_mode_override_for_forward_interpolation():
    # the own seg module interpolates in forward: an explicit mode wins
    m = hrnet_fast.convert(HighResolutionModule([4, 8], (1, 1), (4, 8), mode="bilinear"), mode="nearest")
    assert hrnet_fast.fused_modules(m)[0].fused_exchange.mode == "nearest"
