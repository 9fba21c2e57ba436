"""hrnet_fast.optimize at its edges (issues 24, 25): NaN and inf propagate as
in eager on every convolution platform, an example input of the wrong
channel count is named before anything is built, and a model in training
mode is refused."""
from __future__ import annotations

import warnings

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


# -- the example input (issue 24.7) ---------------------------------------------

def test_wrong_channel_count_is_named_before_building(monkeypatch):
    """An example with 4 channels for an RGB model: optimize names both
    counts and the convolution (oneDNN said "could not create a primitive
    descriptor"), before any convolution is built."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("hrnet_w18_small", pretrained=False).eval()
    built = []
    monkeypatch.setattr(convs.FusedConv, "__init__", lambda self, *a, **k: built.append(1))
    with pytest.raises(ValueError, match=r"example_input has 4 channels .*first convolution, conv1 .*takes 3"):
        hrnet_fast.optimize(model, torch.randn(1, 4, 64, 64))
    assert not built
    with pytest.raises(RuntimeError, match="to have 3 channels, but got 4"):  # eager names them too
        model(torch.randn(1, 4, 64, 64))


class Grey(nn.Module):
    """A grey input normalised, then repeated to the RGB its stem takes."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(8, 2, 1)  # registered first, runs last
        self.norm = nn.BatchNorm2d(1)
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)

    def forward(self, x):
        return self.head(torch.relu(self.stem(self.norm(x).repeat(1, 3, 1, 1))))


def test_channels_are_counted_where_the_first_convolution_sees_them():
    """What the model does to its input before its first convolution counts:
    a grey input repeated to RGB is right (the first registered conv, the
    head, takes 8), an input that reaches the stem with 6 channels is not."""
    torch.manual_seed(0)
    model = randomize_bn(Grey()).eval()
    x = torch.randn(2, 1, 9, 9)
    fast = hrnet_fast.optimize(model, x)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    model.norm = nn.Identity()
    with pytest.raises(ValueError, match=r"reaches it with 6 channels .*first convolution, stem .*takes 3"):
        hrnet_fast.optimize(model, torch.randn(2, 2, 9, 9))


def test_the_check_leaves_a_training_source_as_it_was():
    """The check runs the source up to its first convolution in eval mode:
    a BatchNorm before it updates no statistics, and every module keeps
    its mode."""
    torch.manual_seed(0)
    model = randomize_bn(Grey()).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="training mode"):
        hrnet_fast.optimize(model, torch.randn(2, 1, 9, 9))
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_example_check_doctest():
    import doctest
    from hrnet_fast.optimize import example

    assert doctest.testmod(example).failed == 0


# -- a model in training mode (issue 25.4) ----------------------------------------

def test_training_model_is_evaluated_and_said_so():
    """optimize of a model in training mode computes model.eval()'s function
    (BatchNorm running statistics, no dropout), says so in a warning and in
    its report, and leaves the source in training mode."""
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(Block(), nn.Dropout(0.5)))
    assert model.training
    x = torch.randn(2, 3, 9, 7)
    with pytest.warns(UserWarning, match=r"training mode .*model.eval\(\)"):
        fast = hrnet_fast.optimize(model, x)
    assert fast.report.source_training and "source in training mode" in str(fast.report)
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        got = fast(x)
        model.eval()
        want = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = hrnet_fast.optimize(model, x)  # in eval mode: no word
    assert not quiet.report.source_training
