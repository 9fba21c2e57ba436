"""Client layouts (issue 17): mmseg, mmpose and the official segmentation
repository's pytorch-v1.1 branch convert with no arguments, fuse their
up-branches wherever that is exact, and give the unconverted outputs and
gradients at every input size the unconverted module accepts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import hrnet_fast
from hrnet_fast.plan.program import Resample
from layouts import MMPoseHRModule, MMSegHRModule, OfficialSegV11Module, Upsample
from test_convert_common import assert_close_lists, assert_same_grads, loss_of, pair, record_outputs

CHANNELS = (4, 6, 8, 10)
# Branch sizes as a stride-2 stem and transitions give them: even (each
# branch exactly half the one above), and odd ones, where a x2 upsample of
# 13 gives 26 and the branch above is 25.
SIZES = {"even": [(32, 24), (16, 12), (8, 6), (4, 3)],
         "odd": [(25, 38), (13, 19), (7, 10), (4, 5)],
         "odd2": [(15, 9), (8, 5), (4, 3), (2, 2)]}


def _inputs(sizes, n=2):
    return [torch.randn(n, c, h, w, dtype=torch.float64) for c, (h, w) in zip(CHANNELS, sizes)]


def _modes(model):
    return [(m.fused_exchange.mode, m.fused_exchange.align_corners) for m in hrnet_fast.fused_modules(model)]


def _kinds(model):
    return [t.kind for m in hrnet_fast.fused_modules(model) for row in m.fused_exchange.terms for t in row]


def _matches(ref, fused, xs, train):
    ref.train(train)
    fused.train(train)
    a = ref([t.clone() for t in xs])
    b = fused([t.clone() for t in xs])
    assert_close_lists(a, b)
    if train:
        loss_of(a).backward()
        loss_of(b).backward()
        assert_same_grads(ref, fused)


@pytest.mark.parametrize("sizes", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_mmseg_layout_every_size(sizes, train):
    ref, fused = pair(MMSegHRModule(CHANNELS))
    assert _modes(fused) == [("bilinear", False)]
    assert _kinds(fused).count("up") == 6  # every up-branch is fused; none runs opaque
    _matches(ref, fused, _inputs(SIZES[sizes]), train)


def test_mmseg_upsample_runs_only_where_the_sizes_miss(monkeypatch):
    # Even sizes: the op resizes the 1x1 conv's output once (the layer's own
    # upsample and the host's resize compose to one resize). Odd sizes: the
    # layer's upsample runs, then the op resizes down (26 -> 25) as mmseg's
    # resize does: a module call in the terms, a Resample in the program.
    calls = []
    real = Upsample.forward
    monkeypatch.setattr(Upsample, "forward", lambda self, x: calls.append(tuple(x.shape[-2:])) or real(self, x))
    ref, fused = pair(MMSegHRModule(CHANNELS))
    fx = hrnet_fast.fused_modules(fused)[0].fused_exchange
    resamples = lambda: [ins for ins in fx.program.code if isinstance(ins, Resample)]  # noqa: E731
    fused.eval()
    with torch.no_grad():
        fused(_inputs(SIZES["even"]))
        assert calls == [] and resamples() == []
        fused(_inputs(SIZES["odd"]))
        assert calls == [] and resamples()
        _matches(ref, fused, _inputs(SIZES["odd"]), train=False)
    calls.clear()
    fx.eval_program = False
    with torch.no_grad():
        fused(_inputs(SIZES["odd"]))
    assert calls  # the mismatching ones ran as the source runs them


@pytest.mark.parametrize("mode,align", [("nearest", None), ("bilinear", None), ("bilinear", True)])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_mmpose_layout(mode, align, train):
    ref, fused = pair(MMPoseHRModule(CHANNELS, mode=mode, align_corners=align))
    assert _modes(fused) == [(mode, bool(align))]
    assert _kinds(fused).count("up") == 6
    _matches(ref, fused, _inputs(SIZES["even"]), train)


def test_mmpose_layout_rejects_sizes_the_source_rejects():
    ref, fused = pair(MMPoseHRModule(CHANNELS))
    xs = _inputs(SIZES["odd"])
    ref.eval()
    fused.eval()
    with torch.no_grad(), pytest.raises(RuntimeError, match="must match the size"):
        ref([t.clone() for t in xs])
    with torch.no_grad(), pytest.raises(RuntimeError, match="must match the size"):
        fused([t.clone() for t in xs])


@pytest.mark.parametrize("sizes", ["even", "odd"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_official_seg_v11_layout_converts_with_no_arguments(sizes, train):
    ref, fused = pair(OfficialSegV11Module(CHANNELS))
    assert _modes(fused) == [("bilinear", False)]
    _matches(ref, fused, _inputs(SIZES[sizes]), train)


def test_real_mmsegmentation_backbone_if_installed():
    hrnet = pytest.importorskip("mmseg.models.backbones.hrnet")
    extra = dict(
        stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(1,), num_channels=(8,)),
        stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(1, 1), num_channels=(4, 8)),
        stage3=dict(num_modules=1, num_branches=3, block="BASIC", num_blocks=(1, 1, 1), num_channels=(4, 8, 12)),
        stage4=dict(num_modules=1, num_branches=4, block="BASIC", num_blocks=(1, 1, 1, 1),
                    num_channels=(4, 8, 12, 16)))
    model = hrnet.HRNet(extra)
    ref, fused = pair(model)
    for hw in [(64, 64), (100, 150), (97, 61)]:
        x = torch.randn(2, 3, *hw, dtype=torch.float64)
        for train in (False, True):
            ref.train(train)
            fused.train(train)
            with torch.no_grad():
                assert_close_lists(ref(x), fused(x))


@pytest.mark.parametrize("where", ["layer", "conv", "bn", "upsample", "down-link", "down-last"])
def test_hooks_on_fuse_layers_fire(where):
    ref, fused = pair(MMPoseHRModule(CHANNELS))
    modules = {}
    for name, model in (("ref", ref), ("fused", fused)):
        rows = model.fuse_layers
        modules[name] = {"layer": rows[0][2], "conv": rows[0][1][0], "bn": rows[0][1][1], "upsample": rows[0][3][2],
                         "down-link": rows[3][0][0], "down-last": rows[3][0][2][1]}[where]
    seen = record_outputs(modules)
    xs = _inputs(SIZES["even"])
    for train in (False, True):
        seen.clear()
        _matches(ref, fused, xs, train)
        assert set(seen) == {"ref", "fused"}, train
        torch.testing.assert_close(seen["fused"], seen["ref"])


def test_bad_convert_arguments_fail_at_convert():
    model = MMPoseHRModule(CHANNELS)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        hrnet_fast.convert(model, backend="gpu")
    with pytest.raises(TypeError, match="expected an nn.Module, got NoneType"):
        hrnet_fast.convert(None)
    with pytest.raises(ValueError, match="mode must be one of"):
        hrnet_fast.convert(model, mode="bicubic")
    with pytest.raises(ValueError, match="contains no HRNet module"):
        hrnet_fast.convert(nn.Conv2d(3, 3, 1))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend 'cuda' is unavailable"):
            hrnet_fast.convert(model, backend="cuda")
    assert not hrnet_fast.fused_modules(model)  # nothing half-converted
