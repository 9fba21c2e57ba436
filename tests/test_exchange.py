"""Forward semantics of hrnet_fast.exchange on the CPU backend against the
reference (plain PyTorch: affine, F.interpolate(size=...), sum, ReLU)."""
import pytest
import torch

import hrnet_fast
import hrnet_fast.backend
from hrnet_fast.contract import make_call
from exchange_cases import MODES, SHAPES, make_case, nearest_adjoint, rel_err

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="C++ extension not built")


@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shapes,size", SHAPES)
def test_matches_reference_float64(shapes, size, mode, align_corners, channels_last):
    xs, sc, sh = make_case(shapes, dtype=torch.float64, channels_last=channels_last, partial_affine=True)
    got = hrnet_fast.exchange(xs, sc, sh, size=size, mode=mode, align_corners=align_corners, backend="cpu")
    want = hrnet_fast.reference(xs, sc, sh, size=size, mode=mode, align_corners=align_corners)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("relu", [True, False])
def test_matches_reference_float32(mode, align_corners, relu):
    xs, sc, sh = make_case([(17, 9), (9, 5), (5, 3), (3, 2)], c=18, dtype=torch.float32)
    kw = dict(size=(17, 9), mode=mode, align_corners=align_corners, relu=relu)
    got = hrnet_fast.exchange(xs, sc, sh, backend="cpu", **kw)
    torch.testing.assert_close(got, hrnet_fast.reference(xs, sc, sh, **kw), rtol=1e-5, atol=1e-5)
    if not relu:
        assert (got < 0).any()


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_half_precision_accumulates_in_float32(dtype, tol, mode, channels_last):
    xs, sc, sh = make_case([(16, 12), (8, 6), (4, 3)], c=18, dtype=dtype, channels_last=channels_last)
    got = hrnet_fast.exchange(xs, sc, sh, mode=mode, backend="cpu")
    assert got.dtype == dtype
    want = hrnet_fast.reference([x.double() for x in xs], [s.double() for s in sc], [b.double() for b in sh],
                                mode=mode)
    assert rel_err(got, want) < tol


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("plane", [(8, 6), (5, 3), (1, 1)])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [37, 48])  # channels_last: 16-channel blocks, or the row loop
def test_same_size_float32_is_bit_exact_in_its_order(count, plane, relu, channels_last, channels):
    # All-same-size float32 inputs: the extension is built without fused
    # multiply-adds (setup.py), so the result is exactly the float32 result
    # of this order of operations, whatever the compiler vectorises: the
    # shifts summed first, then each input's scale * x added in turn.
    xs, sc, sh = make_case([plane] * count, n=3, c=channels, channels_last=channels_last)
    want = torch.zeros(channels)
    for b in sh:
        want = want + b
    want = want.view(1, -1, 1, 1).expand_as(xs[0])
    for x, s in zip(xs, sc):
        want = want + s.view(1, -1, 1, 1) * x
    if relu:
        want = torch.relu(want)
    got = hrnet_fast.exchange(xs, sc, sh, relu=relu, backend="cpu")
    assert torch.equal(got, want)


def test_explicit_size_larger_than_every_input():
    xs, sc, sh = make_case([(8, 5), (4, 3)], dtype=torch.float64)
    got = hrnet_fast.exchange(xs, sc, sh, size=(15, 9), mode="bilinear", backend="cpu")
    want = hrnet_fast.reference(xs, sc, sh, size=(15, 9), mode="bilinear")
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_strided_and_mixed_layout_inputs(mode):
    base, sc, sh = make_case([(20, 14), (10, 7), (5, 4)], c=6, dtype=torch.float64)
    xs = [base[0][:, :, ::2, ::2],                                  # strided view
          base[1].to(memory_format=torch.channels_last),            # other layout than inputs[0]
          base[2].transpose(2, 3).contiguous().transpose(2, 3)]     # permuted strides
    got = hrnet_fast.exchange(xs, sc, sh, size=(10, 7), mode=mode, backend="cpu")
    want = hrnet_fast.reference(xs, sc, sh, size=(10, 7), mode=mode)
    torch.testing.assert_close(got, want)


def test_empty_batch():
    xs, sc, sh = make_case([(8, 5), (4, 3)], n=0)
    got = hrnet_fast.exchange(xs, sc, sh, backend="cpu")
    assert got.shape == (0, 5, 8, 5)


def test_single_input_is_affine_plus_relu():
    xs, sc, sh = make_case([(9, 7)], dtype=torch.float64)
    got = hrnet_fast.exchange(xs, sc, sh, backend="cpu")
    torch.testing.assert_close(got, torch.relu(xs[0] * sc[0].view(1, -1, 1, 1) + sh[0].view(1, -1, 1, 1)))


def test_inputs_are_not_modified():
    xs, sc, sh = make_case([(15, 9), (8, 5)], channels_last=True)
    for t in xs + sc + sh:
        t.requires_grad_()
    before = [t.detach().clone() for t in xs + sc + sh]
    y = hrnet_fast.exchange(xs, sc, sh, mode="bilinear", backend="cpu")
    y.sum().backward()
    for a, b in zip(xs + sc + sh, before):
        assert torch.equal(a, b)


def test_nan_propagates_like_reference():
    xs, sc, sh = make_case([(6, 4), (3, 2)], dtype=torch.float64)
    xs[0][0, 1, 2, 3] = float("nan")
    xs[1][1, 2, 0, 0] = float("nan")
    for mode in ("nearest", "bilinear"):
        got = hrnet_fast.exchange(xs, sc, sh, mode=mode, backend="cpu")
        want = hrnet_fast.reference(xs, sc, sh, mode=mode)
        assert torch.equal(got.isnan(), want.isnan())
        torch.testing.assert_close(got, want, equal_nan=True)


def test_auto_picks_cpu_for_cpu_tensors():
    xs, sc, sh = make_case([(6, 4), (3, 2)], dtype=torch.float64)
    torch.testing.assert_close(hrnet_fast.exchange(xs, sc, sh), hrnet_fast.exchange(xs, sc, sh, backend="cpu"))
    assert hrnet_fast.backend.choose("auto", make_call(xs)).name == "cpu"


def test_reference_backend_is_the_reference():
    xs, sc, sh = make_case([(6, 4), (3, 2)], dtype=torch.float64)
    assert torch.equal(hrnet_fast.exchange(xs, sc, sh, backend="reference"), hrnet_fast.reference(xs, sc, sh))
    assert torch.equal(hrnet_fast.reference.exchange(xs, sc, sh), hrnet_fast.reference(xs, sc, sh))


def test_build_info_and_backends():
    info = hrnet_fast.build_info()
    assert isinstance(info["cuda_compiled"], bool)
    assert isinstance(info["cuda_arch_list"], list)
    assert info["torch"] == torch.__version__
    b = hrnet_fast.backends()
    assert set(b) == {"reference", "cpu", "cuda", "triton"}
    assert b["reference"] and b["cpu"]
    if not torch.cuda.is_available():
        assert not b["cuda"]


@pytest.mark.parametrize("partial", [False, True], ids=["no-affine", "none-entries"])
def test_identity_affine_made_in_inference_mode_does_not_leak_into_autograd(partial):
    # Nothing made for a call under inference_mode (identity rows, cached
    # choices) may be saved for a backward later.
    xs, sc, sh = make_case([(6, 4), (3, 2)], affine=partial, partial_affine=partial)
    with torch.inference_mode():
        hrnet_fast.exchange(xs, sc, sh, backend="cpu")
    leaves = [x.clone().requires_grad_() for x in xs]
    rows = [None if s is None else s.clone().requires_grad_() for s in sc] if partial else None
    y = hrnet_fast.exchange(leaves, rows, sh, backend="cpu")
    y.sum().backward()
    assert all(t.grad is not None for t in leaves + [r for r in rows or [] if r is not None])


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shapes,size", [
    ([(7, 6), (8, 6)], (7, 6)),                  # mmseg at odd sizes: a x2 upsample of 4 resized 8 -> 7
    ([(4, 5), (5, 7), (2, 3), (9, 11)], (4, 5)),  # larger on both axes, mixed with smaller inputs
    ([(6, 5), (12, 3)], (6, 5)),                 # larger along H, smaller along W
])
def test_bilinear_resizes_larger_inputs_down(shapes, size, channels_last, align_corners):
    xs, sc, sh = make_case(shapes, n=1, c=3, dtype=torch.float64, channels_last=channels_last,
                           partial_affine=True)
    kw = dict(size=size, mode="bilinear", align_corners=align_corners)
    got = hrnet_fast.exchange(xs, sc, sh, backend="cpu", **kw)
    torch.testing.assert_close(got, hrnet_fast.reference(xs, sc, sh, **kw))
    leaves = [x.clone().requires_grad_() for x in xs]
    assert torch.autograd.gradcheck(lambda *t: hrnet_fast.exchange(list(t), sc, sh, backend="cpu", **kw), leaves)


def test_nearest_refuses_larger_inputs():
    xs, _, _ = make_case([(6, 5), (7, 5)])
    with pytest.raises(ValueError, match="only mode='bilinear' resizes down"):
        hrnet_fast.exchange(xs, size=(6, 5), backend="cpu")


# Nearest at ratios where ATen's two index formulas part (kernels/interp.h):
# (source, output) pairs per axis, outputs with H + W above 128 (the CPU's
# generic kernel: float64 products) and at most 128 (vectorised: float32).
NEAREST_RATIOS = [((45, 14), (129, 46)), ((21, 30), (69, 86)), ((2, 6), (82, 74)), ((39, 26), (66, 88)),
                  ((45, 5), (129, 5)), ((7, 45), (7, 129)), ((14, 21), (46, 69)), ((3, 9), (123, 11))]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels_last,c", [(False, 5), (True, 5), (True, 2)], ids=["nchw", "nhwc", "nhwc-c2"])
@pytest.mark.parametrize("source,size", NEAREST_RATIOS)
def test_nearest_picks_the_sources_f_interpolate_picks(source, size, channels_last, c, dtype):
    x = torch.randn(2, c, *source, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = hrnet_fast.exchange([x], size=size, mode="nearest", relu=False, backend="cpu")
    assert torch.equal(got, torch.nn.functional.interpolate(x, size=size, mode="nearest"))


def test_nearest_float64_45_to_129_reads_rows_15_and_30():
    # Issue 24's case: F.interpolate in float64 on the CPU computes the
    # index in float64 here; a float32 product would read rows 14 and 29.
    x = torch.arange(45, dtype=torch.float64).view(1, 1, 45, 1).expand(1, 2, 45, 3).contiguous()
    y = hrnet_fast.exchange([x], size=(129, 3), relu=False, backend="cpu")
    assert y[0, 0, [43, 86], 0].tolist() == [15.0, 30.0]


@pytest.mark.parametrize("channels_last", [False, True])
def test_nearest_float64_adjoint_follows_the_forward_sources(channels_last):
    # The backward's gather reads the sources the forward read (the float64
    # formula here): the adjoint of F.interpolate's forward, which autograd
    # through F.interpolate is not at these sizes (nearest_adjoint).
    x = torch.randn(1, 2, 45, 21, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x0 = torch.randn(1, 2, 129, 69, dtype=torch.float64)
    a = x.clone().requires_grad_()
    y = hrnet_fast.exchange([x0, a], relu=False, backend="cpu")
    assert torch.equal(y, hrnet_fast.reference([x0, x], relu=False))
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, a, g)[0], nearest_adjoint(x, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("rows", [None, [None]], ids=["no-rows", "none-rows"])
def test_output_is_never_an_input(backend, rows):
    # One same-size input, no affine, no ReLU: nothing to compute, and still
    # a new tensor (an in-place op on the result must not edit the input).
    x = torch.randn(2, 3, 5, 4)
    kept = x.clone()
    y = hrnet_fast.exchange([x], rows, rows, relu=False, backend=backend)
    assert y is not x and y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    y.add_(1.0)
    assert torch.equal(x, kept)
