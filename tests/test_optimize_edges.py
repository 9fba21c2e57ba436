"""hrnet_fast.optimize at its edges (issues 24, 25): NaN and inf propagate as
in eager on every convolution platform, an example input of the wrong
channel count is named before anything is built, and a model in training
mode is refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hrnet_fast
from hrnet_fast.optimize import convs, settings as settings_mod
from hrnet_fast.optimize.convs import Platform
from test_convert_common import randomize_bn


class Block(nn.Module):
    """conv-BN-ReLU, then a residual conv-BN + shortcut -> ReLU: the RELU
    and ADD_RELU epilogues (the in-place binary form included)."""

    def __init__(self, c=6):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)) + y)
        return self.conv3(y)


def _poisoned(shape, value, where):
    x = torch.randn(shape)
    x[where] = value
    return x


def assert_same_non_finite(got, want):
    """The same NaN and inf positions as eager, and close values elsewhere."""
    assert torch.equal(got.isnan(), want.isnan()), (got.isnan().sum().item(), want.isnan().sum().item())
    assert torch.equal(got.isinf(), want.isinf())
    fin = want.isfinite()
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-4, atol=1e-4)


# The platforms optimize can take on this machine, and their layouts.
PLATFORMS = [("mkldnn", True), ("mkldnn", False), ("plain", False)]


def _optimize(model, x, platform, channels_last, monkeypatch):
    if platform == "plain":
        monkeypatch.setitem(settings_mod.FUSED_PLATFORMS, Platform.MKLDNN, False)
    fast = hrnet_fast.optimize(model, x, channels_last=channels_last)
    assert fast.report.platform == platform
    return fast


@pytest.mark.parametrize("platform,channels_last", PLATFORMS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_propagate_through_fused_epilogues(platform, channels_last, value, monkeypatch):
    """Issue 24.1: a fused conv + ReLU must not map NaN to a number."""
    torch.manual_seed(0)
    model = randomize_bn(Block()).eval()
    x = _poisoned((2, 3, 9, 7), value, (0, 1, 4, 3))
    fast = _optimize(model, x, platform, channels_last, monkeypatch)
    with torch.no_grad():
        want, got = model(x), fast(x)
    assert want.isnan().any()  # the case is one where eager has NaN to lose
    assert_same_non_finite(got, want)
    clean = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(fast(clean), model(clean), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("platform,channels_last", PLATFORMS)
def test_nan_pixel_through_an_hrnet(platform, channels_last, monkeypatch):
    """Issue 24.1 on timm's hrnet_w18_small: one NaN input pixel gives the
    NaN logits eager gives (it gave finite logits on oneDNN)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = randomize_bn(timm.create_model("hrnet_w18_small", pretrained=False, num_classes=10)).eval()
    x = _poisoned((1, 3, 64, 64), float("nan"), (0, 2, 20, 40))
    fast = _optimize(model, x, platform, channels_last, monkeypatch)
    with torch.no_grad():
        want, got = model(x), fast(x)
    assert want.isnan().all()
    assert got.isnan().all()


def test_library_relu_is_what_loses_nan():
    """The measurement switch puts oneDNN's ReLU post-op back, and with it
    NaN -> 0: the case above is one the fused epilogue gets wrong."""
    torch.manual_seed(0)
    model = randomize_bn(Block()).eval()
    x = _poisoned((2, 3, 9, 7), float("nan"), (0, 1, 4, 3))
    fast = hrnet_fast.optimize(model, x)
    fused = [c for c in convs.fused_convs(fast) if c.epilogue.relu]
    assert fused and all(isinstance(c, convs.MkldnnConv) for c in fused)
    for c in fused:
        c.library_relu = True
    with torch.no_grad():
        assert fast(x).isnan().sum() < model(x).isnan().sum()


def _relu_like_cudnn(v):
    return torch.where(v > 0, v, torch.zeros_like(v))


@pytest.mark.parametrize("keeps_nan", [False, True])
def test_cudnn_fused_call_only_where_it_keeps_nan(keeps_nan, monkeypatch):
    """The cuDNN platform on the CPU, with stand-ins for the fused calls that
    keep NaN (torch.relu) or map it to 0 (as PyTorch's cuDNN descriptor asks):
    optimize uses them only in the first case, and keeps NaN in both."""
    calls = {"fused": 0}

    def act(v):
        return F.relu(v) if keeps_nan else _relu_like_cudnn(v)

    def conv_relu(x, w, b, stride, padding, dilation, groups):
        calls["fused"] += 1
        return act(F.conv2d(x, w, b, stride, padding, dilation, groups))

    def conv_add_relu(x, w, z, alpha, b, stride, padding, dilation, groups):
        calls["fused"] += 1
        return act(F.conv2d(x, w, b, stride, padding, dilation, groups) + alpha * z)

    monkeypatch.setattr(torch, "cudnn_convolution_relu", conv_relu)
    monkeypatch.setattr(torch, "cudnn_convolution_add_relu", conv_add_relu)
    monkeypatch.setattr(settings_mod, "_platform", lambda device, dtype: Platform.CUDNN)
    torch.manual_seed(0)
    model = randomize_bn(Block()).eval()
    x = _poisoned((2, 3, 9, 7), float("nan"), (0, 1, 4, 3))
    fast = hrnet_fast.optimize(model, x)
    assert fast.report.platform == "cudnn"
    relu_convs = [c for c in convs.fused_convs(fast) if c.epilogue.relu]
    assert relu_convs and all(c.library_relu is keeps_nan for c in relu_convs)
    calls["fused"] = 0
    with torch.no_grad():
        want, got = model(x), fast(x)
    assert (calls["fused"] > 0) is keeps_nan
    assert_same_non_finite(got, want)
