"""Triton forward kernel against hrnet_fast.reference, under TRITON_INTERPRET=1."""
import pytest
import torch

import hrnet_fast
from _cases import MODES, assert_close_nonzero, every_case, leaf_copies, make_inputs
from exchange_cases import assert_nearest_like_interpolate


def test_backend_available_under_interpreter():
    assert hrnet_fast.backends()["triton"]


@every_case
def test_forward_matches_reference(mode, align_corners, case, channels_last):
    size, smaller = case
    xs, ss, bs = make_inputs(2, 5, size, smaller, channels_last=channels_last)
    kept = [x.clone() for x in xs]
    y = hrnet_fast.exchange(xs, ss, bs, mode=mode, align_corners=align_corners, backend="triton")
    ref = hrnet_fast.reference(xs, ss, bs, mode=mode, align_corners=align_corners)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert_close_nonzero(y, ref, rtol=1e-5, atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for x, k in zip(xs, kept):  # inputs are not modified
        assert torch.equal(x, k)


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_float64_is_exact_to_rounding(mode, align_corners):
    # float64 indexes and weights are computed in float64, as ATen does.
    xs, ss, bs = make_inputs(1, 3, (7, 5), [(3, 2), (4, 3)], dtype=torch.float64)
    y = hrnet_fast.exchange(xs, ss, bs, mode=mode, align_corners=align_corners, backend="triton")
    ref = hrnet_fast.reference(xs, ss, bs, mode=mode, align_corners=align_corners)
    assert y.dtype == torch.float64
    assert_close_nonzero(y, ref, rtol=1e-12, atol=1e-12)


def test_channels_not_a_block_multiple_and_no_relu():
    # 18 channels: a full block of 16 and a masked one.
    xs, ss, bs = make_inputs(1, 18, (6, 4), [(3, 2)])
    y = hrnet_fast.exchange(xs, ss, bs, mode="bilinear", relu=False, backend="triton")
    ref = hrnet_fast.reference(xs, ss, bs, mode="bilinear", relu=False)
    assert (ref < 0).any()
    assert_close_nonzero(y, ref, rtol=1e-5, atol=1e-5)


def test_explicit_size_larger_than_every_input():
    # No input has the output size: every term is interpolated.
    xs, ss, bs = make_inputs(1, 4, (4, 3), [(2, 2)])
    y = hrnet_fast.exchange(xs, ss, bs, size=(9, 7), mode="bilinear", align_corners=True, backend="triton")
    ref = hrnet_fast.reference(xs, ss, bs, size=(9, 7), mode="bilinear", align_corners=True)
    assert_close_nonzero(y, ref, rtol=1e-5, atol=1e-5)


def test_strided_views_and_mixed_formats():
    base = torch.randn(2, 10, 9, 14)
    x0 = base[:, ::2, :, 1:12]          # non-contiguous channel and width strides
    x1 = torch.randn(2, 5, 4, 6).contiguous(memory_format=torch.channels_last)
    x2 = torch.randn(2, 5, 3, 2).transpose(2, 3).contiguous().transpose(2, 3)  # (2, 5, 3, 2), odd strides
    y = hrnet_fast.exchange([x0, x1, x2], mode="nearest", backend="triton")
    ref = hrnet_fast.reference([x0, x1, x2], mode="nearest")
    assert_close_nonzero(y, ref, rtol=1e-5, atol=1e-5)


def test_more_inputs_than_one_launch_takes():
    # Six inputs: two chained launches through the float32 accumulator.
    xs, ss, bs = make_inputs(1, 3, (6, 6), [(3, 3), (2, 2), (1, 1), (6, 6), (5, 4)])
    y = hrnet_fast.exchange(xs, ss, bs, mode="bilinear", backend="triton")
    ref = hrnet_fast.reference(xs, ss, bs, mode="bilinear")
    assert_close_nonzero(y, ref, rtol=1e-5, atol=1e-5)


def test_empty_batch():
    xs = [torch.randn(0, 4, 6, 5), torch.randn(0, 4, 3, 3)]
    y = hrnet_fast.exchange(xs, mode="bilinear", backend="triton")
    assert y.shape == (0, 4, 6, 5)


def test_nine_inputs_chain_through_two_partial_sums():
    # Three launches: the middle one reads one partial-sum buffer and writes the other.
    xs, ss, bs = make_inputs(1, 2, (4, 4), [(2, 2), (1, 1), (4, 4), (3, 3), (2, 4), (4, 1), (1, 2), (4, 4)])
    y = hrnet_fast.exchange(xs, ss, bs, mode="nearest", backend="triton")
    ref = hrnet_fast.reference(xs, ss, bs, mode="nearest")
    assert_close_nonzero(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_nan_propagates_like_reference(mode):
    xs, ss, bs = make_inputs(1, 3, (6, 4), [(3, 2)])
    xs[0][0, 1, 2, 3] = float("nan")
    xs[1][0, 2, 0, 0] = float("nan")
    leaves, ref_leaves = leaf_copies(xs), leaf_copies(xs)
    y = hrnet_fast.exchange(leaves, ss, bs, mode=mode, backend="triton")
    ref = hrnet_fast.reference(ref_leaves, ss, bs, mode=mode)
    assert ref.isnan().any()
    assert torch.equal(y.isnan(), ref.isnan())
    torch.testing.assert_close(y, ref, equal_nan=True)
    # torch.relu's backward passes the gradient where the output is NaN.
    g = torch.rand_like(ref) + 0.5
    for a, b in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(ref, ref_leaves, g)):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_strided_affine_rows_and_conv_bias():
    # (C,) rows that are views with a stride: the kernels read unit strides.
    xs, _, _ = make_inputs(1, 4, (4, 6), [(2, 3)])
    scales = [(torch.rand(8) + 0.5)[::2], None]
    shifts = [None, torch.randn(12)[::3]]
    convs = [(torch.randn(1, 3, 8, 11), torch.randn(4, 3, 3, 3) * 0.3, torch.randn(8)[1::2])]
    for terms in ([], convs):
        y = hrnet_fast.exchange(xs, scales, shifts, convs=terms, mode="bilinear", backend="triton")
        ref = hrnet_fast.reference(xs, scales, shifts, convs=terms, mode="bilinear")
        assert_close_nonzero(y, ref, rtol=1e-5, atol=1e-5)


# Where ATen's two nearest formulas part (kernels/interp.h): an output of
# H + W > 128 takes the CPU's float64 formula for float64 NCHW tensors, and
# the float32 one for channels_last with more than three channels.
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels_last,c", [(False, 2), (True, 4)], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("source,size", [((45, 14), (129, 46)), ((14, 21), (46, 69))], ids=["large", "small"])
def test_nearest_picks_the_sources_f_interpolate_picks(source, size, channels_last, c, dtype):
    assert_nearest_like_interpolate("triton", source, size, c, channels_last, dtype)
