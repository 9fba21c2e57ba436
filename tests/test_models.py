"""hrnet_fast.models: official key layout, shapes, and conversion
equivalence for the seg (bilinear, both align_corners) and pose (nearest)
models, including input sizes that do not divide evenly."""
from __future__ import annotations

import pytest
import torch

import hrnet_fast
from hrnet_fast.models import ARCHS, HighResolutionModule, create
from test_convert_common import eval_matches, pair, train_step_matches


def test_archs_and_heads():
    assert set(ARCHS) == {"w18_small_v1", "w18_small_v2", "w18", "w32", "w48", "w64"}
    assert ARCHS["w48"]["stage4"].channels == (48, 96, 192, 384)
    assert ARCHS["w64"]["stage3"].num_modules == 4
    with pytest.raises(ValueError):
        create("w18", "cls")
    with pytest.raises(ValueError):
        create("w17", "seg")


def test_seg_keys_follow_official_layout():
    m = create("w18", "seg", num_classes=19)
    keys = list(m.state_dict())
    for k in ("conv1.weight", "bn1.running_var", "conv2.weight", "bn2.weight", "layer1.0.downsample.0.weight",
              "layer1.3.conv3.weight", "transition1.0.0.weight", "transition1.1.0.0.weight",
              "transition2.2.0.0.weight", "transition3.3.0.1.running_mean",
              "stage2.0.branches.1.3.conv2.weight", "stage2.0.fuse_layers.0.1.0.weight",
              "stage2.0.fuse_layers.1.0.0.0.weight", "stage3.3.fuse_layers.2.0.1.1.running_var",
              "stage4.2.fuse_layers.3.0.2.0.weight", "stage4.2.fuse_layers.0.3.1.bias",
              "last_layer.0.weight", "last_layer.0.bias", "last_layer.1.running_mean", "last_layer.3.weight",
              "last_layer.3.bias"):
        assert k in keys, k
    assert not any(k.startswith(("final_layer", "stage1", "transition4")) for k in keys)
    assert m.state_dict()["last_layer.0.weight"].shape == (270, 270, 1, 1)  # 18+36+72+144
    assert m.state_dict()["last_layer.3.weight"].shape == (19, 270, 1, 1)
    # the stage 2-4 backbone keys are those of timm's (classification-repo) HRNet
    timm = pytest.importorskip("timm")
    t = timm.create_model("hrnet_w18", pretrained=False).state_dict()
    shared = [k for k in keys if k.startswith(("conv", "bn", "layer1", "transition", "stage"))]
    assert all(k in t and t[k].shape == m.state_dict()[k].shape for k in shared)


def test_pose_layout():
    m = create("w32", "pose", num_joints=17)
    sd = m.state_dict()
    assert sd["final_layer.weight"].shape == (17, 32, 1, 1) and "final_layer.bias" in sd
    assert len(m.stage4[-1].fuse_layers) == 1 and len(m.stage4[0].fuse_layers) == 4
    assert len(m.stage4) == 3 and len(m.stage3) == 4
    up = m.stage2[0].fuse_layers[0][1]
    assert isinstance(up[2], torch.nn.Upsample) and up[2].mode == "nearest"
    assert not any(k.startswith("last_layer") for k in sd)


def test_output_shapes():
    seg = create("w18_small_v1", "seg", num_classes=5).eval()
    pose = create("w18_small_v2", "pose", num_joints=3).eval()
    with torch.no_grad():
        assert seg(torch.randn(1, 3, 64, 96)).shape == (1, 5, 16, 24)
        assert seg(torch.randn(1, 3, 50, 66)).shape == (1, 5, 13, 17)
        assert pose(torch.randn(1, 3, 64, 96)).shape == (1, 3, 16, 24)


SIZES = [(64, 64), (96, 64), (50, 66)]  # 50x66: 250x330 scaled down, nothing divides evenly


@pytest.mark.parametrize("align_corners", [False, True])
def test_seg_eval_matches(align_corners):
    ref, fused = pair(create("w18_small_v2", "seg", num_classes=4, align_corners=align_corners))
    for m in hrnet_fast.fused_modules(fused):
        assert m.fused_exchange.mode == "bilinear" and m.fused_exchange.align_corners == align_corners
    for h, w in SIZES:
        eval_matches(ref, fused, torch.randn(2, 3, h, w, dtype=torch.float64))


@pytest.mark.parametrize("align_corners", [False, True])
def test_seg_train_matches(align_corners):
    ref, fused = pair(create("w18_small_v1", "seg", num_classes=4, align_corners=align_corners))
    for h, w in ((64, 64), (50, 66)):
        for m in (ref, fused):
            m.zero_grad()
        train_step_matches(ref, fused, torch.randn(2, 3, h, w, dtype=torch.float64))


def test_seg_train_matches_with_batch_stats_in_op():
    ref, fused = pair(create("w18_small_v1", "seg", num_classes=4, align_corners=True))
    for m in hrnet_fast.fused_modules(fused):
        m.fused_exchange.batch_stats_in_op = True
    train_step_matches(ref, fused, torch.randn(2, 3, 50, 66, dtype=torch.float64))


def test_pose_eval_and_train_match():
    ref, fused = pair(create("w18_small_v2", "pose", num_joints=5))
    assert {m.fused_exchange.mode for m in hrnet_fast.fused_modules(fused)} == {"nearest"}
    for h, w in ((64, 64), (96, 64)):
        eval_matches(ref, fused, torch.randn(2, 3, h, w, dtype=torch.float64))
    train_step_matches(ref, fused, torch.randn(2, 3, 64, 64, dtype=torch.float64))


def test_pose_non_divisible_fails_like_unconverted():
    ref, fused = pair(create("w18_small_v1", "pose"))
    x = torch.randn(1, 3, 50, 66, dtype=torch.float64)
    for m in (ref.eval(), fused.eval()):
        with pytest.raises(RuntimeError, match="must match the size"):
            m(x)
    for m in (ref.train(), fused.train()):
        with pytest.raises(RuntimeError, match="must match the size"):
            m(x)


@pytest.mark.parametrize("arch,head", [("w48", "pose"), ("w64", "seg")])
def test_big_widths_eval(arch, head):
    # eval only, one tiny image: these models are large
    ref, fused = pair(create(arch, head), dtype=torch.float32)
    x = torch.randn(1, 3, 32, 32)
    ref.eval()
    fused.eval()
    with torch.no_grad():
        a, b = ref(x), fused(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


@pytest.mark.parametrize("in_op", [False, True])
def test_standalone_module_and_odd_batchnorm_settings(in_op):
    # momentum=None (cumulative average) and track_running_stats=False BNs,
    # on a bare HighResolutionModule converted by itself
    def build():
        torch.manual_seed(3)
        m = HighResolutionModule([4, 8, 12], (1, 1, 1), (4, 8, 12), mode="bilinear")
        bns = [b for b in m.fuse_layers.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        for b in bns[::2]:
            b.momentum = None
        for b in bns[1::3]:
            b.track_running_stats = False
            b.running_mean = b.running_var = b.num_batches_tracked = None
        return m

    ref, fused = pair(build())
    fused.load_state_dict(ref.state_dict())
    hrnet_fast.fused_modules(fused)[0].fused_exchange.batch_stats_in_op = in_op
    xs = lambda: [torch.randn(2, c, h, w, dtype=torch.float64) for c, h, w in ((4, 9, 11), (8, 5, 6), (12, 3, 3))]
    for _ in range(2):
        inp = xs()
        ref.train()
        fused.train()
        a, b = ref([t.clone() for t in inp]), fused([t.clone() for t in inp])
        for p, q in zip(a, b):
            torch.testing.assert_close(q, p)
        for (k, p), q in zip(ref.state_dict().items(), fused.state_dict().values()):
            torch.testing.assert_close(q, p, msg=k)
    inp = xs()
    ref.eval()
    fused.eval()
    with torch.no_grad():
        for p, q in zip(ref([t.clone() for t in inp]), fused([t.clone() for t in inp])):
            torch.testing.assert_close(q, p)
