"""Triton backward kernels against autograd through hrnet_fast.reference,
under TRITON_INTERPRET=1."""
import pytest
import torch

import hrnet_fast
from _cases import MODES, assert_close_nonzero, every_case, leaf_copies, make_inputs
from exchange_cases import nearest_adjoint, saved_bytes


def _grads(backend, xs, ss, bs, grad, **kw):
    """Gradients of <exchange(...), grad> for every tensor argument."""
    xs, ss, bs = leaf_copies(xs), leaf_copies(ss), leaf_copies(bs)
    if backend == "reference":
        y = hrnet_fast.reference(xs, ss, bs, **kw)
    else:
        y = hrnet_fast.exchange(xs, ss, bs, backend=backend, **kw)
    (y * grad).sum().backward()
    return y.detach(), [t.grad for t in xs + ss + bs]


@every_case
def test_backward_matches_reference(mode, align_corners, case, channels_last):
    size, smaller = case
    xs, ss, bs = make_inputs(2, 5, size, smaller, channels_last=channels_last)
    grad = torch.randn(2, 5, *size)
    kept = [x.clone() for x in xs]
    kw = dict(mode=mode, align_corners=align_corners)
    y, got = _grads("triton", xs, ss, bs, grad, **kw)
    _, want = _grads("reference", xs, ss, bs, grad, **kw)
    assert (y == 0).any() and (y > 0).any()  # the ReLU mask matters
    for g, r, x in zip(got, want, xs + ss + bs):
        assert g.shape == x.shape and g.dtype == x.dtype
        assert_close_nonzero(g, r, rtol=1e-4, atol=1e-4)
    for g, x in zip(got[:len(xs)], xs):  # gradients follow their input's memory format
        fmt = torch.channels_last if channels_last and x.shape[-1] * x.shape[-2] > 1 else torch.contiguous_format
        assert g.is_contiguous(memory_format=fmt)
    for x, k in zip(xs, kept):
        assert torch.equal(x, k)


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_backward_float64_against_reference_and_finite_differences(mode, align_corners):
    """gradcheck in miniature: the analytic gradients equal autograd through
    the reference to float64 rounding, and a central difference along one
    random direction of every argument agrees with them (full gradcheck
    would take thousands of interpreter launches)."""
    torch.manual_seed(3)
    xs, ss, bs = make_inputs(1, 3, (7, 5), [(4, 3), (2, 2)], dtype=torch.float64)
    grad = torch.randn(1, 3, 7, 5, dtype=torch.float64)
    kw = dict(mode=mode, align_corners=align_corners)
    _, got = _grads("triton", xs, ss, bs, grad, **kw)
    _, want = _grads("reference", xs, ss, bs, grad, **kw)
    for g, r in zip(got, want):
        assert_close_nonzero(g, r, rtol=1e-10, atol=1e-10)

    args = xs + ss + bs
    dirs = [torch.randn_like(t) for t in args]
    eps = 1e-6

    def f(sign):
        moved = [t + sign * eps * d for t, d in zip(args, dirs)]
        y = hrnet_fast.exchange(moved[:3], moved[3:6], moved[6:], backend="triton", **kw)
        return (y * grad).sum()

    numeric = (f(1) - f(-1)) / (2 * eps)
    analytic = sum((g * d).sum() for g, d in zip(got, dirs))
    torch.testing.assert_close(numeric, analytic, rtol=1e-6, atol=1e-6)


def test_backward_18_channels_no_relu_only_interpolated_terms():
    # 18 channels (a masked channel block); no same-size input, so the shift
    # gradient comes from an adjoint's sum; relu=False uses the raw gradient.
    xs, ss, bs = make_inputs(2, 18, (3, 2), [(2, 2)])
    grad = torch.randn(2, 18, 6, 5)
    kw = dict(mode="bilinear", size=(6, 5), relu=False)
    _, got = _grads("triton", xs, ss, bs, grad, **kw)
    _, want = _grads("reference", xs, ss, bs, grad, **kw)
    for g, r in zip(got, want):
        assert_close_nonzero(g, r, rtol=1e-4, atol=1e-4)


def test_backward_of_strided_views_and_chained_inputs():
    base = torch.randn(1, 8, 6, 9)
    x0 = base[:, ::2, :, 2:8]                      # (1, 4, 6, 6), non-contiguous
    others = [torch.randn(1, 4, 3, 3), torch.randn(1, 4, 2, 2), torch.randn(1, 4, 1, 1),
              torch.randn(1, 4, 6, 6)]             # five inputs: two chained forward launches
    xs = [x0] + others
    ss = [torch.rand(4) + 0.5 for _ in xs]
    bs = [torch.randn(4) for _ in xs]
    grad = torch.randn(1, 4, 6, 6).expand(1, 4, 6, 6)
    kw = dict(mode="nearest")
    _, got = _grads("triton", xs, ss, bs, grad, **kw)
    _, want = _grads("reference", xs, ss, bs, grad, **kw)
    for g, r in zip(got, want):
        assert_close_nonzero(g, r, rtol=1e-4, atol=1e-4)


def test_backward_accepts_an_expanded_gradient():
    # y.sum().backward() hands the op a stride-0 gradient.
    xs, ss, bs = make_inputs(1, 3, (4, 4), [(2, 2)])
    xs_t = leaf_copies(xs)
    xs_r = leaf_copies(xs)
    hrnet_fast.exchange(xs_t, ss, bs, mode="bilinear", backend="triton").sum().backward()
    hrnet_fast.reference(xs_r, ss, bs, mode="bilinear").sum().backward()
    for a, b in zip(xs_t, xs_r):
        assert_close_nonzero(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_backward_is_deterministic():
    xs, ss, bs = make_inputs(1, 5, (15, 9), [(8, 5)])
    grad = torch.randn(1, 5, 15, 9)
    _, first = _grads("triton", xs, ss, bs, grad, mode="bilinear")
    _, second = _grads("triton", xs, ss, bs, grad, mode="bilinear")
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_backward_empty_batch():
    xs = leaf_copies([torch.randn(0, 4, 6, 5), torch.randn(0, 4, 3, 3)])
    s = (torch.rand(4) + 0.5).requires_grad_()
    y = hrnet_fast.exchange(xs, [s, None], mode="bilinear", backend="triton")
    y.sum().backward()
    assert xs[0].grad.shape == (0, 4, 6, 5) and xs[1].grad.shape == (0, 4, 3, 3)
    assert torch.equal(s.grad, torch.zeros(4))


def test_backward_nearest_float64_follows_the_forward_sources():
    # 45 -> 129 rows: the CPU's float64 nearest formula (interp.h); the
    # adjoint must read the sources the forward read (nearest_adjoint: not
    # autograd through F.interpolate, whose backward differs here).
    x0 = torch.randn(1, 2, 129, 9, dtype=torch.float64)
    x1 = torch.randn(1, 2, 45, 4, dtype=torch.float64)
    grad = torch.randn(1, 2, 129, 9, dtype=torch.float64)
    a = leaf_copies([x0, x1])
    y = hrnet_fast.exchange(a, mode="nearest", relu=False, backend="triton")
    assert torch.equal(y, hrnet_fast.reference([x0, x1], mode="nearest", relu=False))
    got = torch.autograd.grad(y, a, grad)
    assert_close_nonzero(got[0], grad, rtol=0, atol=0)
    assert_close_nonzero(got[1], nearest_adjoint(x1, grad), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("relu", [True, False])
def test_saves_what_the_backward_reads_as_eager_does(relu):
    # The output with a ReLU, the scaled input and its scale; not the
    # unscaled inputs: what eager keeps for the reference's ops.
    xs, ss, bs = make_inputs(1, 3, (6, 4), [(3, 2), (6, 4)])
    leaves = leaf_copies(xs)
    s1 = ss[1].clone().requires_grad_()
    kw = dict(mode="bilinear", relu=relu)
    y, got = saved_bytes(lambda: hrnet_fast.exchange(leaves, [None, s1, None], bs, backend="triton", **kw))
    _, want = saved_bytes(lambda: hrnet_fast.reference(leaves, [None, s1, None], bs, **kw))
    assert got == want == (leaves[1].untyped_storage().nbytes() + s1.untyped_storage().nbytes()
                           + (y.untyped_storage().nbytes() if relu else 0))


def test_unscaled_inputs_may_change_before_backward_scaled_ones_may_not():
    xs, ss, bs = make_inputs(1, 3, (6, 4), [(3, 2)], dtype=torch.float64)
    leaves = leaf_copies(xs + [ss[1]])
    x0, x1 = leaves[0] * 1.0, leaves[1] * 1.0  # non-leaves: in-place is allowed
    y = hrnet_fast.exchange([x0, x1], [None, leaves[2]], bs, mode="bilinear", relu=False, backend="triton")
    g = torch.randn_like(y)
    want = torch.autograd.grad(hrnet_fast.reference([x0, x1], [None, leaves[2]], bs, mode="bilinear", relu=False),
                               leaves, g, retain_graph=True)
    x0.mul_(3.0)
    y.add_(1.0)
    for u, v in zip(torch.autograd.grad(y, leaves, g, retain_graph=True), want):
        assert_close_nonzero(u, v, rtol=1e-12, atol=1e-12)
    x1.add_(1.0)  # its scale's gradient reads it
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(y, leaves, g)


def test_inference_tensor_as_an_unscaled_input():
    xs, ss, bs = make_inputs(1, 3, (6, 4), [(3, 2)], dtype=torch.float64)
    with torch.inference_mode():
        frozen = xs[0].clone()
    x1, s1 = leaf_copies([xs[1], ss[1]])
    got = torch.autograd.grad(hrnet_fast.exchange([frozen, x1], [None, s1], bs, backend="triton").sum(), [x1, s1])
    x1r, s1r = leaf_copies([xs[1], ss[1]])
    want = torch.autograd.grad(hrnet_fast.reference([xs[0], x1r], [None, s1r], bs).sum(), [x1r, s1r])
    for u, v in zip(got, want):
        assert_close_nonzero(u, v, rtol=1e-12, atol=1e-12)
