"""hrnet_fast.optimize on the CPU: the same function as model.eval() for
every supported family and head (timm, features_only, this package's seg and
pose models, the official segmentation layout, mmseg/mmcv-style modules, an
untraceable root), odd sizes, batch 1 and 2, the source left unchanged,
models with no BN, affine-free BN, BN without running statistics,
pre-activation BN and hooks, the inference-only and input rules, and the
stale-weights rule."""
from __future__ import annotations

import copy
import doctest
import importlib
from typing import List

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hrnet_fast
from hrnet_fast.convert.layouts import is_hr_module
from hrnet_fast.models import HighResolutionModule
from hrnet_fast.optimize import OptimizedModule, StaleSourceError
from hrnet_fast.optimize.convs import Epilogue, FusedConv
from hrnet_fast.plan.program import Exchange
from layouts import MMBackbone, MMBasicBlock, OfficialSegModule, seg_src
from test_convert_common import randomize_bn

timm = pytest.importorskip("timm")

TOL = 1e-4  # max |optimized - eager| / max |eager|, float32 on the CPU


def _as_list(out) -> List[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def rel_err(got, want) -> float:
    worst = 0.0
    got, want = _as_list(got), _as_list(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        worst = max(worst, ((g - w).abs().max() / w.abs().max().clamp_min(1e-12)).item())
    return worst


def snapshot(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {k: id(v) for k, v in model.named_parameters()},
            {k: v.requires_grad for k, v in model.named_parameters()},
            [m.training for m in model.modules()])


def assert_unchanged(model: nn.Module, snap) -> None:
    state, ids, grads, modes = snap
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), k
    assert {k: id(v) for k, v in model.named_parameters()} == ids
    assert {k: v.requires_grad for k, v in model.named_parameters()} == grads
    assert [m.training for m in model.modules()] == modes


def check_equal(model: nn.Module, inputs, tol: float = TOL, **kw) -> OptimizedModule:
    """optimize(model) computes model.eval()'s function on every input, and
    neither building nor calling it changes the model."""
    model.eval()
    snap = snapshot(model)
    fast = hrnet_fast.optimize(model, **kw)
    assert_unchanged(model, snap)
    for x in inputs:
        with torch.no_grad():
            want = model(x.clone())
        got = fast(x.clone())
        assert rel_err(got, want) <= tol, (tuple(x.shape), rel_err(got, want))
    assert_unchanged(model, snap)
    return fast


def all_bns(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# -- model families ------------------------------------------------------------

@pytest.fixture(scope="module")
def timm_cls():
    torch.manual_seed(0)
    return randomize_bn(timm.create_model("hrnet_w18_small", pretrained=False)).eval()


def test_timm_classification(timm_cls):
    fast = check_equal(timm_cls, [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 96, 64)])
    r = fast.report
    assert r.bns_folded == all_bns(timm_cls) and r.bns_left == 0
    assert r.exchange_modules == sum(1 for m in timm_cls.modules() if is_hr_module(m))
    assert r.epilogues["add_relu"] > 0 and r.epilogues["relu"] > 0
    assert not (r.untraced or r.hooked or r.unrecognised)
    assert r.opaque_terms == 0  # every summand folded into the exchange's rows


def test_timm_features_only():
    torch.manual_seed(0)
    m = randomize_bn(timm.create_model("hrnet_w18_small", pretrained=False, features_only=True))
    fast = check_equal(m, [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 64, 96)])
    assert fast.report.bns_left == 0 and not fast.report.untraced


@pytest.mark.parametrize("align", [False, True])
def test_own_seg_odd_sizes(align):
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=5, align_corners=align))
    fast = check_equal(m, [torch.randn(1, 3, 67, 45), torch.randn(2, 3, 50, 61)])
    assert fast.report.bns_folded == all_bns(m) and fast.report.opaque_terms == 0


def test_own_pose():
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "pose", num_joints=3))
    fast = check_equal(m, [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 96, 64)])
    assert fast.report.bns_folded == all_bns(m) and fast.report.opaque_terms == 0


# The official segmentation repository's layout (tests/layouts.py).


def _blocks(channels):
    """One BasicBlock per branch, as the official repositories' branches."""
    return HighResolutionModule(channels, (1,) * len(channels), channels, mode="bilinear").branches


class OfficialSegNet(nn.Module):
    """Stem, two stages of the official seg module, the seg head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.transition1 = nn.ModuleList([None, nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False),
                                                              nn.BatchNorm2d(16), nn.ReLU(inplace=True))])
        self.stage2 = nn.Sequential(OfficialSegModule([8, 16], _blocks([8, 16])))
        self.transition2 = nn.ModuleList([None, None, nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, bias=False),
                                                                    nn.BatchNorm2d(32), nn.ReLU(inplace=True))])
        self.stage3 = nn.Sequential(
            OfficialSegModule([8, 16, 32], _blocks([8, 16, 32])),
            OfficialSegModule([8, 16, 32], _blocks([8, 16, 32])))
        self.last_layer = nn.Sequential(nn.Conv2d(56, 56, 1), nn.BatchNorm2d(56), nn.ReLU(inplace=True),
                                        nn.Conv2d(56, 4, 1))

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x_list = []
        for i in range(2):
            x_list.append(self.transition1[i](x) if self.transition1[i] is not None else x)
        y_list = self.stage2(x_list)
        x_list = []
        for i in range(3):
            if self.transition2[i] is not None:
                x_list.append(self.transition2[i](y_list[-1]))
            else:
                x_list.append(y_list[i])
        x = self.stage3(x_list)
        h, w = x[0].size(2), x[0].size(3)
        x1 = F.interpolate(x[1], size=(h, w), mode="bilinear", align_corners=seg_src.ALIGN_CORNERS)
        x2 = F.interpolate(x[2], size=(h, w), mode="bilinear", align_corners=seg_src.ALIGN_CORNERS)
        return self.last_layer(torch.cat([x[0], x1, x2], 1))


@pytest.mark.parametrize("align", [True, False])
def test_official_seg_layout(align, monkeypatch):
    monkeypatch.setattr(seg_src, "ALIGN_CORNERS", align)
    torch.manual_seed(1)
    m = randomize_bn(OfficialSegNet())
    fast = check_equal(m, [torch.randn(1, 3, 45, 39), torch.randn(2, 3, 32, 48)])
    assert fast.report.exchange_modules == 3 and fast.report.bns_left == 0 and fast.report.opaque_terms == 0
    hr = [mod for mod in fast.modules() if type(mod).__name__ == "OptimizedHRModule"]
    assert {(h.mode, h.align_corners) for h in hr} == {("bilinear", align)}


def test_mm_style_backbone_odd_sizes():
    torch.manual_seed(2)
    m = randomize_bn(MMBackbone())
    # 99x83: the coarse branches upsample to one size and resize to another
    fast = check_equal(m, [torch.randn(1, 3, 99, 83), torch.randn(2, 3, 64, 64)])
    r = fast.report
    assert r.bns_folded == all_bns(m) and r.bns_left == 0
    assert r.epilogues.get("add_relu", 0) == 1 + 2 * 2 + 3 * 2  # every MMBasicBlock's last conv
    assert r.exchange_modules == 2 and r.opaque_terms == 0


def test_untraceable_root_runs_its_own_forward():
    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.stage = nn.Sequential(HighResolutionModule([8, 8], (1, 1), (8, 8)))
            self.head = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())

        def forward(self, x):
            x = self.bn(self.conv(x))
            if x.shape[-1] > 1:  # shape-dependent Python: not traceable
                x = F.relu(x)
            ys = self.stage([x, F.max_pool2d(x, 2)])
            return self.head(ys[0])

    torch.manual_seed(3)
    m = randomize_bn(Root())
    fast = check_equal(m, [torch.randn(1, 3, 32, 32), torch.randn(2, 3, 64, 32)])
    r = fast.report
    assert r.untraced and "Root" in r.untraced[0]
    assert r.exchange_modules == 1
    assert r.bns_left == 1  # the root's own bn: its conv runs separately
    assert r.bns_folded == all_bns(m) - 1


def test_converted_model_optimizes_the_same():
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    hrnet_fast.convert(m)
    check_equal(m, [torch.randn(1, 3, 45, 33)])


# -- BatchNorm variants, hooks, layouts ------------------------------------------

class TinyNet(nn.Module):
    """A residual block and a transition-like chain built from arguments."""

    def __init__(self, norm=None, preact=False):
        super().__init__()
        norm = norm or (lambda c: nn.BatchNorm2d(c))
        self.preact = preact
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=norm is None)
        self.n1 = norm(8)
        self.conv2 = nn.Conv2d(8, 8, 3, 1, 1, bias=False)
        self.n2 = norm(8)
        self.conv3 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        if self.preact:  # BN -> ReLU -> conv, BN not right after a conv: nothing to fold into
            y = F.relu(self.conv1(x))
            z = self.conv2(F.relu(self.n1(y)))
            return self.conv3(F.relu(self.n2(z + y)))
        y = F.relu(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y)) + y
        return self.conv3(torch.relu(y))


def test_no_batchnorm():
    torch.manual_seed(0)
    m = TinyNet(norm=lambda c: nn.Identity())
    fast = check_equal(m, [torch.randn(2, 3, 9, 7)])
    assert fast.report.bns_folded == 0 and fast.report.bns_left == 0
    assert fast.report.epilogues == {"relu": 1, "add_relu": 1}


def test_affine_free_batchnorm():
    torch.manual_seed(0)
    m = randomize_bn(TinyNet(norm=lambda c: nn.BatchNorm2d(c, affine=False)))
    fast = check_equal(m, [torch.randn(2, 3, 9, 7)])
    assert fast.report.bns_folded == 2


def test_batchnorm_without_running_stats_is_left():
    torch.manual_seed(0)
    m = TinyNet(norm=lambda c: nn.BatchNorm2d(c, track_running_stats=False))
    fast = check_equal(m, [torch.randn(2, 3, 9, 7)])
    assert fast.report.bns_folded == 0 and fast.report.bns_left == 2
    assert any("running statistics" in why for why in fast.report.bn_reasons)


def test_preactivation_batchnorm_is_left_and_counted():
    torch.manual_seed(0)
    m = randomize_bn(TinyNet(preact=True))
    fast = check_equal(m, [torch.randn(1, 3, 9, 7)])
    assert fast.report.bns_left == 2 and fast.report.bns_folded == 0
    assert "no convolution right before it" in fast.report.bn_reasons


def test_hooks_fire_and_see_what_they_saw():
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "pose", num_joints=2)).eval()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, []).append(output.detach().clone())
        return hook

    bn = m.stage2[0].branches[1][0].bn2
    handles = [bn.register_forward_hook(record("bn")),
               m.transition1[1].register_forward_hook(record("transition")),
               m.stage3[0].fuse_layers[0][2].register_forward_hook(record("fuse"))]
    x = torch.randn(1, 3, 64, 64)
    fast = check_equal(m, [x])  # eager then optimized: two records each
    for name, outs in seen.items():
        assert len(outs) == 2, name
        assert rel_err(outs[1], outs[0]) <= TOL, name
    assert len(fast.report.hooked) == 3
    assert fast.report.bns_left >= 1  # the hooked BN runs as a module
    for h in handles:
        h.remove()


def test_channels_last_off_float64_and_reference_backend():
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    xs = [torch.randn(2, 3, 45, 37)]
    fast = check_equal(m, xs, channels_last=False)
    assert not fast.settings.channels_last
    # the reference backend computes the stride-2 conv terms itself
    check_equal(m, xs, backend="reference")
    m64 = copy.deepcopy(m).double()
    fast = check_equal(m64, [x.double() for x in xs], tol=1e-10)
    assert fast.report.platform == "plain"


def test_cudnn_platform_calls_match_their_schema(monkeypatch):
    """The cuDNN path on the CPU: torch.cudnn_convolution_relu /
    cudnn_convolution_add_relu replaced by reference implementations of
    their schemas (aten::cudnn_convolution_relu(self, weight, bias, stride,
    padding, dilation, groups), aten::cudnn_convolution_add_relu(self,
    weight, z, alpha, bias, stride, padding, dilation, groups)): every
    argument must land where the schema says. The exchange gets the biases
    as shifts, as on CUDA."""
    from hrnet_fast.optimize import settings as settings_mod
    from hrnet_fast.optimize.convs import CudnnConv, Platform

    calls = {"relu": 0, "add_relu": 0}

    def conv_relu(x, w, b, stride, padding, dilation, groups):
        calls["relu"] += 1
        return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))

    def conv_add_relu(x, w, z, alpha, b, stride, padding, dilation, groups):
        calls["add_relu"] += 1
        return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups) + alpha * z)

    monkeypatch.setattr(torch, "cudnn_convolution_relu", conv_relu)
    monkeypatch.setattr(torch, "cudnn_convolution_add_relu", conv_add_relu)
    monkeypatch.setattr(settings_mod, "_platform", lambda device, dtype: Platform.CUDNN)
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3))
    fast = check_equal(m, [torch.randn(2, 3, 45, 37)], channels_last=True)
    assert fast.report.platform == "cudnn" and fast.settings.channels_last
    convs = [c for c in fast.modules() if isinstance(c, CudnnConv)]
    assert convs and not any(c.fallback for c in convs)
    assert calls["relu"] > 0 and calls["add_relu"] > 0
    programs = [hr.programs.program for hr in fast.modules() if hasattr(hr, "programs")]
    assert programs and all(p is not None for p in programs)
    assert any(ins.shifts is not None for p in programs for ins in p.code if isinstance(ins, Exchange))


def test_input_layout_and_independent_outputs():
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3)).eval()
    fast = hrnet_fast.optimize(m)
    x = torch.randn(1, 3, 40, 40)
    a = fast(x)
    kept = a.clone()
    b = fast(torch.randn(1, 3, 40, 40))
    assert torch.equal(a, kept) and a.data_ptr() != b.data_ptr()
    assert a.is_contiguous()
    c = fast(x.contiguous(memory_format=torch.channels_last))
    assert c.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(c, a, rtol=1e-5, atol=1e-6)


# -- the rewrite's own cases ------------------------------------------------------

def test_residual_read_after_the_add_is_not_overwritten():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, 1, 1)
            self.b = nn.Conv2d(4, 4, 3, 1, 1)
            self.c = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            r = self.a(x)
            y = torch.relu(self.b(x) + r)
            return y, self.c(r), r  # r is read after the add and returned

    torch.manual_seed(0)
    fast = check_equal(Net(), [torch.randn(2, 4, 7, 5)])
    convs = [m for m in fast.modules() if isinstance(m, FusedConv)]
    assert not any(c.inplace for c in convs)


def test_inplace_residual_chain_is_exact():
    torch.manual_seed(0)
    m = randomize_bn(nn.Sequential(*[MMBasicBlock(8, 8) for _ in range(3)]))
    outer = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), m)
    fast = check_equal(outer, [torch.randn(2, 3, 11, 9)])
    fused = [c for c in fast.modules() if isinstance(c, FusedConv) and c.epilogue is Epilogue.ADD_RELU]
    assert len(fused) == 3
    # the first block's residual is the stem conv's fresh output, read by no
    # one else later: written in place; so are the next blocks'
    assert all(c.inplace for c in fused)


def test_weight_packed_per_input_shape_and_bounded():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
    fast = hrnet_fast.optimize(m)
    conv = next(c for c in fast.modules() if isinstance(c, FusedConv))
    if conv.platform.value != "mkldnn":
        pytest.skip("oneDNN is not available")
    limit = conv.MAX_SHAPES
    for k in range(limit + 2):
        x = torch.randn(1 + k % 2, 3, 5 + k, 4)
        with torch.no_grad():
            assert rel_err(fast(x), m(x)) <= TOL
    assert len(conv.packs) == limit


class ConvBN(nn.Module):
    """A conv and a BN whose forward `combine(self, x)` says how they meet."""

    def __init__(self, combine, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(3, cout, 3, 1, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.combine = combine

    def forward(self, x):
        return self.combine(self, x)


def test_shared_conv_called_twice():
    torch.manual_seed(0)
    net = ConvBN(lambda m, x: m.bn(m.conv(x)) + F.relu(m.conv(x)), 3)
    check_equal(randomize_bn(net), [torch.randn(1, 3, 8, 8)])


def test_conv_whose_weight_is_read_directly_keeps_its_module():
    torch.manual_seed(0)
    net = ConvBN(lambda m, x: F.relu(m.bn(m.conv(x))) * m.conv.weight.mean(), 4)
    fast = check_equal(randomize_bn(net), [torch.randn(1, 3, 8, 8)])
    assert fast.report.bns_left == 1 and fast.report.bns_folded == 0


# -- rules ------------------------------------------------------------------------

@pytest.fixture()
def small():
    torch.manual_seed(0)
    m = randomize_bn(hrnet_fast.models.create("w18_small_v1", "pose", num_joints=2)).eval()
    return m, hrnet_fast.optimize(m, torch.randn(1, 3, 64, 64))


def test_inference_only(small):
    m, fast = small
    with pytest.raises(RuntimeError, match="convert"):
        fast.train()
    assert fast.eval() is fast
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    with pytest.raises(RuntimeError, match="convert"):
        fast(x)
    with torch.no_grad():
        fast(x)  # no gradient wanted: fine
    with torch.no_grad():
        assert not fast(torch.randn(1, 3, 64, 64)).requires_grad
    out = fast(torch.randn(1, 3, 64, 64))
    assert out.requires_grad  # as the source model's output would
    out.clamp_(min=0)  # a fresh tensor: in-place use as with eager outputs
    with pytest.raises(RuntimeError, match="convert"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="convert"):
        fast.requires_grad_()
    fast.training = True
    with pytest.raises(RuntimeError, match="convert"):
        fast(torch.randn(1, 3, 64, 64))
    fast.training = False
    with pytest.raises(RuntimeError, match="optimize"):
        fast.to(torch.float64)
    with pytest.raises(RuntimeError, match="convert"):
        nn.Sequential(fast).train()


def test_bad_inputs(small):
    m, fast = small
    snap = snapshot(m)
    for bad in (torch.randn(3, 64, 64), torch.randn(1, 3, 64, 64, dtype=torch.float64),
                torch.randn(1, 3, 64, 64, dtype=torch.bfloat16), torch.empty(1, 3, 64, 64, device="meta")):
        with pytest.raises(ValueError, match="expected a 4-D torch.float32 tensor on cpu"):
            fast(bad)
    with pytest.raises(TypeError):
        fast([torch.randn(1, 3, 64, 64)])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(fast(x), m(x)) <= TOL  # nothing corrupted
    assert_unchanged(m, snap)


def test_bad_arguments():
    m = nn.Conv2d(3, 3, 1)
    with pytest.raises(TypeError):
        hrnet_fast.optimize("model")
    with pytest.raises(ValueError, match="backend"):
        hrnet_fast.optimize(m, backend="nope")
    with pytest.raises(ValueError, match="cuda_graph"):
        hrnet_fast.optimize(m, cuda_graph=True)
    with pytest.raises(TypeError, match="dtype"):
        hrnet_fast.optimize(m, dtype=torch.int32)
    with pytest.raises(ValueError, match="example_input is on meta"):
        hrnet_fast.optimize(m, torch.empty(1, 3, 4, 4, device="meta"))


@pytest.mark.parametrize("change", ["in_place", "optimizer", "load_state_dict", "running_stats", "moved",
                                    "replaced"])
def test_changed_source_raises(small, change):
    m, fast = small
    x = torch.randn(1, 3, 64, 64)
    fast(x)
    if change == "in_place":
        with torch.no_grad():
            m.stage2[0].branches[0][0].conv1.weight.mul_(1.5)
    elif change == "optimizer":
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        torch.optim.SGD(m.parameters(), lr=0.1).step()
    elif change == "load_state_dict":
        m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()})
    elif change == "running_stats":
        m.train()
        m(torch.randn(2, 3, 64, 64))
        m.eval()
    elif change == "moved":
        m.double()
    elif change == "replaced":
        m.final_layer.weight = nn.Parameter(m.final_layer.weight.detach().clone())
    with pytest.raises(StaleSourceError, match="optimize"):
        fast(x)
    with pytest.raises(StaleSourceError):  # still refuses, never serves stale results
        fast(x)
    m.float()
    again = hrnet_fast.optimize(m)
    with torch.no_grad():
        assert rel_err(again(x), m(x)) <= TOL


def test_unrelated_module_creation_does_not_trip_the_guard(small):
    m, fast = small
    nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))  # registers parameters elsewhere
    fast(torch.randn(1, 3, 64, 64))


def test_report_and_setup_time():
    torch.manual_seed(0)
    m = timm.create_model("hrnet_w18_small_v2", pretrained=False).eval()
    fast = hrnet_fast.optimize(m, torch.randn(1, 3, 64, 64))
    r = fast.report
    assert r.bns_folded == all_bns(m) and r.bns_left == 0 and r.exchange_rows > 0
    assert r.setup_s < 30  # seconds, not minutes (generous: a shared 2-core machine)
    assert "BatchNorms folded" in str(r)


def test_doctests():
    # importlib: `hrnet_fast.optimize` the attribute is the function
    for name in ("api", "report"):
        mod = importlib.import_module(f"hrnet_fast.optimize.{name}")
        result = doctest.testmod(mod, verbose=False)
        assert result.failed == 0, mod.__name__
