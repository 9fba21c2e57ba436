"""conv1x1 (the UP terms' 1x1 convolution as a GEMM) against F.conv2d."""
import pytest
import torch
import torch.nn.functional as F

from hrnet_fast.pointwise import bound_conv1x1, conv1x1

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 7, 5, 3), (3, 16, 8, 6), (2, 5, 1, 9)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_conv2d(layout, shape, with_bias):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=LAYOUTS[layout])
    w = torch.randn(11, shape[1], 1, 1)
    b = torch.randn(11) if with_bias else None
    before = x.clone()
    y = conv1x1(x, w, b)
    expected = F.conv2d(x, w, b)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert y.shape == expected.shape
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)


def test_strided_input_falls_back():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 9, 10)[:, :, ::2, 1::3]
    w, b = torch.randn(4, 6, 1, 1), torch.randn(4)
    torch.testing.assert_close(conv1x1(x, w, b), F.conv2d(x, w, b), rtol=1e-5, atol=1e-5)


def test_empty_batch():
    y = conv1x1(torch.randn(0, 6, 4, 4), torch.randn(3, 6, 1, 1), torch.randn(3))
    assert y.shape == (0, 3, 4, 4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [1, 2])
def test_gradcheck(layout, batch):
    torch.manual_seed(2)
    x = torch.randn(batch, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=LAYOUTS[layout])
    x.requires_grad_()
    w = torch.randn(3, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv1x1, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: conv1x1(x, w), (x, w))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_autocast_bfloat16_like_conv2d(layout):
    torch.manual_seed(3)
    x = torch.randn(2, 32, 8, 6).contiguous(memory_format=LAYOUTS[layout])
    w, b = torch.randn(16, 32, 1, 1), torch.randn(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, expected = conv1x1(x, w, b), F.conv2d(x, w, b)
    assert y.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected.float(), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bound_matches_conv2d_on_fresh_inputs(layout, with_bias):
    # Bound once to a shape, then called on new tensors of that shape, as the
    # eval plan does; other layouts and no bias take the general function.
    torch.manual_seed(2)
    shape = (3, 13, 7, 5)
    w, b = torch.randn(9, 13, 1, 1, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    bias = b if with_bias else None
    conv = bound_conv1x1(torch.randn(shape, dtype=torch.float64).contiguous(memory_format=LAYOUTS[layout]), w, bias)
    for _ in range(2):
        x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=LAYOUTS[layout])
        y = conv(x)
        torch.testing.assert_close(y, F.conv2d(x, w, bias), rtol=1e-12, atol=1e-12)
        assert y.shape == (3, 9, 7, 5)
