"""exchange with stride-2 conv terms on the Triton backend, under
TRITON_INTERPRET=1: forward and gradients of every argument against the
reference (F.conv2d + interpolation), both input-size parities, channel
counts that are not multiples of any tile."""
import pytest
import torch

import hrnet_fast
from _cases import MODES, assert_close_nonzero, leaf_copies, make_inputs


def _run(backend, xs, ss, bs, convs, grad, **kw):
    xs, ss, bs = leaf_copies(xs), leaf_copies(ss), leaf_copies(bs)
    flat = [t for term in convs for t in term if t is not None]
    leaves = leaf_copies(flat)
    it = iter(leaves)
    terms = [(next(it), next(it), next(it) if b is not None else None) for _, _, b in convs]
    if backend == "reference":
        y = hrnet_fast.reference(xs, ss, bs, convs=terms, **kw)
    else:
        y = hrnet_fast.exchange(xs, ss, bs, convs=terms, backend=backend, **kw)
    (y * grad).sum().backward()
    return y.detach(), [t.grad for t in xs + ss + bs + leaves]


def _terms(c_out, specs, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    terms = []
    for c_in, h, w, with_bias in specs:
        a = torch.randn(2, c_in, h, w).contiguous(memory_format=fmt)
        wt = torch.randn(c_out, c_in, 3, 3) * (1.0 / (3 * c_in ** 0.5))
        terms.append((a, wt, torch.randn(c_out) * 0.5 if with_bias else None))
    return terms


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_conv_terms_forward_backward(mode, align_corners):
    # 18 output channels; conv inputs of both parities (16 -> 8, 15 -> 8).
    xs, ss, bs = make_inputs(2, 18, (8, 6), [(4, 3)])
    convs = _terms(18, [(5, 16, 12, True), (3, 15, 11, False)])
    grad = torch.randn(2, 18, 8, 6)
    kw = dict(mode=mode, align_corners=align_corners)
    y, got = _run("triton", xs, ss, bs, convs, grad, **kw)
    r, want = _run("reference", xs, ss, bs, convs, grad, **kw)
    assert_close_nonzero(y, r, rtol=1e-4, atol=1e-4)
    for g, w in zip(got, want):
        assert_close_nonzero(g, w, rtol=1e-3, atol=1e-3)


def test_conv_terms_channels_last_and_wide_channels():
    # 36 output channels (W18 branch 1), a 72-channel conv input: K = 9 * 72
    # spans several reduction blocks, none of them assumed full.
    xs, ss, bs = make_inputs(2, 36, (4, 4), [(2, 2)], channels_last=True)
    convs = _terms(36, [(72, 8, 7, True)], channels_last=True)
    grad = torch.randn(2, 36, 4, 4)
    y, got = _run("triton", xs, ss, bs, convs, grad, mode="bilinear")
    r, want = _run("reference", xs, ss, bs, convs, grad, mode="bilinear")
    assert_close_nonzero(y, r, rtol=1e-4, atol=1e-4)
    for g, w in zip(got, want):
        assert_close_nonzero(g, w, rtol=1e-3, atol=1e-3)


def test_conv_terms_without_relu_and_single_input():
    xs, ss, bs = make_inputs(1, 5, (3, 5), [])
    convs = _terms(5, [(4, 6, 9, True)])
    convs = [(a[:1], w, b) for a, w, b in convs]
    grad = torch.randn(1, 5, 3, 5)
    y, got = _run("triton", xs, ss, bs, convs, grad, relu=False)
    r, want = _run("reference", xs, ss, bs, convs, grad, relu=False)
    assert (r < 0).any()
    assert_close_nonzero(y, r, rtol=1e-4, atol=1e-4)
    for g, w in zip(got, want):
        assert_close_nonzero(g, w, rtol=1e-3, atol=1e-3)


def test_one_pass_kernel_is_the_path_taken(monkeypatch):
    # The conv terms must reach the implicit-GEMM op, not the library path.
    import hrnet_fast.backend.triton as declared

    def refuse(*args, **kwargs):
        raise AssertionError("library path taken")

    monkeypatch.setattr(declared, "lower_convs", refuse)
    xs, ss, bs = make_inputs(1, 18, (4, 3), [(2, 2)])
    convs = _terms(18, [(20, 8, 5, True), (9, 7, 6, True), (4, 8, 6, False)])  # three terms, both parities
    convs = [(a[:1], w, b) for a, w, b in convs]
    y = hrnet_fast.exchange(xs, ss, bs, convs=convs, mode="nearest", backend="triton")
    r = hrnet_fast.reference(xs, ss, bs, convs=convs, mode="nearest")
    assert_close_nonzero(y, r, rtol=1e-4, atol=1e-4)


def test_float64_and_many_terms_take_the_library_path():
    # float64 (no tl.dot path) and four conv terms (beyond the kernel's slots).
    xs, ss, bs = make_inputs(1, 4, (3, 3), [(2, 2)], dtype=torch.float64)
    convs = [(a[:1].double(), w.double(), None if b is None else b.double())
             for a, w, b in _terms(4, [(3, 6, 6, True)] * 4)]
    grad = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    y, got = _run("triton", xs, ss, bs, convs, grad, mode="bilinear")
    r, want = _run("reference", xs, ss, bs, convs, grad, mode="bilinear")
    assert_close_nonzero(y, r, rtol=1e-10, atol=1e-10)
    for g, w in zip(got, want):
        assert_close_nonzero(g, w, rtol=1e-9, atol=1e-9)
