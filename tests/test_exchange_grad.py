"""Backward of hrnet_fast.exchange on the CPU backend: gradcheck in float64,
agreement with autograd through the reference, determinism."""
import pytest
import torch

import hrnet_fast
from exchange_cases import MODES, make_case, rel_err, requires_grad

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="C++ extension not built")


def _fn(mode, align_corners, relu, size=None):
    def f(*args):
        k = len(args) // 3
        xs, sc, sh = list(args[:k]), list(args[k:2 * k]), list(args[2 * k:])
        return hrnet_fast.exchange(xs, sc, sh, size=size, mode=mode, align_corners=align_corners, relu=relu,
                                   backend="cpu")
    return f


@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [True, False])
def test_gradcheck(mode, align_corners, channels_last, relu):
    xs, sc, sh = make_case([(7, 5), (4, 3), (2, 2)], n=2, c=3, dtype=torch.float64, channels_last=channels_last)
    args = requires_grad(xs + sc + sh)
    assert torch.autograd.gradcheck(_fn(mode, align_corners, relu), args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shapes", [[(5, 4)] * 4, [(5, 4)] * 2 + [(3, 2)], [(4, 3)] * 5 + [(2, 2)]],
                         ids=["four-same", "two-same-one-smaller", "five-same-one-smaller"])
def test_gradcheck_several_same_size_inputs(shapes, channels_last):
    # The backward's first pass fuses up to four same-size inputs; more take
    # a second path. Ten channels: channels_last sums blocks of eight in
    # registers and the last two apart.
    xs, sc, sh = make_case(shapes, n=1, c=10, dtype=torch.float64, channels_last=channels_last)
    args = requires_grad(xs + sc + sh)
    assert torch.autograd.gradcheck(_fn("bilinear", False, True), args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_nearest_exact_factors(channels_last):
    # Nearest upsampling by exactly 2, 4 and 8 along W takes the grouped-sum
    # adjoint; 3 -> 16 (not an integer factor) the general tap walk.
    xs, sc, sh = make_case([(8, 16), (4, 8), (2, 4), (1, 2), (2, 3)], n=1, c=3, dtype=torch.float64,
                           channels_last=channels_last)
    args = requires_grad(xs + sc + sh)
    assert torch.autograd.gradcheck(_fn("nearest", False, True), args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_gradcheck_odd_upsampling_and_explicit_size(mode, align_corners):
    xs, sc, sh = make_case([(5, 3), (3, 2), (1, 1)], n=1, c=2, dtype=torch.float64)
    args = requires_grad(xs + sc + sh)
    assert torch.autograd.gradcheck(_fn(mode, align_corners, True, size=(9, 7)), args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_grads_match_reference(mode, align_corners, channels_last):
    xs, sc, sh = make_case([(17, 9), (9, 5), (5, 3), (3, 2)], c=18, channels_last=channels_last)
    a, b = requires_grad(xs + sc + sh), requires_grad(xs + sc + sh)
    kw = dict(mode=mode, align_corners=align_corners)
    y = hrnet_fast.exchange(a[:4], a[4:8], a[8:], backend="cpu", **kw)
    r = hrnet_fast.reference(b[:4], b[4:8], b[8:], **kw)
    g = torch.randn_like(r)
    got = torch.autograd.grad(y, a, g)
    want = torch.autograd.grad(r, b, g)
    for i, (u, v) in enumerate(zip(got, want)):
        assert u.shape == v.shape
        assert rel_err(u, v) < 1e-5, i


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_half_precision_grads_accumulate_in_float32(dtype, tol, mode, channels_last):
    # Inputs and their gradients in half precision; the masked gradient,
    # adjoints and per-channel sums in float32 (exact-factor nearest here:
    # 16x12 from 8x6 and 4x3).
    xs, sc, sh = make_case([(16, 12), (8, 6), (4, 3)], c=18, dtype=dtype, channels_last=channels_last)
    a = requires_grad(xs + sc + sh)
    y = hrnet_fast.exchange(a[:3], a[3:6], a[6:], mode=mode, backend="cpu")
    g = torch.randn(y.shape, dtype=torch.float64)
    got = torch.autograd.grad(y, a, g.to(dtype))
    b = requires_grad([t.double() for t in xs + sc + sh])
    want = torch.autograd.grad(hrnet_fast.reference(b[:3], b[3:6], b[6:], mode=mode), b, g)
    for i, (u, v) in enumerate(zip(got, want)):
        assert u.dtype == a[i].dtype and u.shape == v.shape, i
        assert rel_err(u.double(), v) < tol, (i, rel_err(u.double(), v))


def test_only_some_arguments_require_grad():
    xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64)
    x0 = xs[0].clone().requires_grad_()
    s1 = sc[1].clone().requires_grad_()
    y = hrnet_fast.exchange([x0, xs[1]], [sc[0], s1], sh, mode="bilinear", backend="cpu")
    g0, gs = torch.autograd.grad(y.square().sum(), [x0, s1])
    x0r, s1r = x0.detach().clone().requires_grad_(), s1.detach().clone().requires_grad_()
    r = hrnet_fast.reference([x0r, xs[1]], [sc[0], s1r], sh, mode="bilinear")
    w0, ws = torch.autograd.grad(r.square().sum(), [x0r, s1r])
    torch.testing.assert_close(g0, w0)
    torch.testing.assert_close(gs, ws)


@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_is_deterministic_across_runs_and_thread_counts(channels_last):
    xs, sc, sh = make_case([(32, 24), (16, 12), (8, 6), (4, 3)], n=4, c=18, channels_last=channels_last)
    g = torch.randn(4, 18, 32, 24)

    def grads():
        args = requires_grad(xs + sc + sh)
        y = hrnet_fast.exchange(args[:4], args[4:8], args[8:], mode="bilinear", backend="cpu")
        return torch.autograd.grad(y, args, g)

    threads = torch.get_num_threads()
    try:
        first = grads()
        second = grads()
        torch.set_num_threads(1)
        single = grads()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, single):
        assert torch.equal(a, b)
        assert torch.equal(a, c)


def test_works_under_deterministic_algorithms():
    xs, sc, sh = make_case([(8, 6), (4, 3)])
    args = requires_grad(xs + sc + sh)
    with torch.autograd.set_detect_anomaly(False):
        prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            y = hrnet_fast.exchange(args[:2], args[2:4], args[4:], mode="bilinear", backend="cpu")
            y.sum().backward()
        finally:
            torch.use_deterministic_algorithms(prev)
    assert all(a.grad is not None for a in args)


def _saved_bytes(fn):
    """Bytes autograd keeps for the graph fn() builds: the distinct storages
    of the saved tensors (saved_tensors_hooks)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn()
    return y, sum(storages.values())


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_saves_what_the_backward_reads_as_eager_does(relu, channels_last):
    # Kept: the output when there is a ReLU (its mask), the scaled input and
    # its scale; not the unscaled inputs (no gradient reads them): exactly
    # what eager keeps for the reference's ops.
    xs, sc, sh = make_case([(8, 6), (4, 3), (8, 6)], c=4, channels_last=channels_last)
    leaves = requires_grad(xs)
    s1 = sc[1].clone().requires_grad_()
    kw = dict(mode="bilinear", relu=relu)
    y, got = _saved_bytes(lambda: hrnet_fast.exchange(leaves, [None, s1, None], sh, backend="cpu", **kw))
    r, want = _saved_bytes(lambda: hrnet_fast.reference(leaves, [None, s1, None], sh, **kw))
    expected = leaves[1].untyped_storage().nbytes() + s1.untyped_storage().nbytes()
    assert got == want == expected + (y.untyped_storage().nbytes() if relu else 0)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("relu", [True, False])
def test_unscaled_inputs_may_change_before_backward(backend, relu):
    # An in-place edit of an input without a scale (or of the output without
    # a ReLU) between forward and backward: as in eager, nothing reads them.
    xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64)
    a = requires_grad(xs + [sc[1]])
    x0, x1 = a[0] * 1.0, a[1] * 1.0  # non-leaves, so in-place is allowed
    y = hrnet_fast.exchange([x0, x1], [None, a[2]], sh, mode="bilinear", relu=relu, backend=backend)
    g = torch.randn_like(y)
    want = torch.autograd.grad(hrnet_fast.reference([x0, x1], [None, a[2]], sh, mode="bilinear", relu=relu), a, g,
                               retain_graph=True)
    x0.mul_(3.0)
    if not relu:
        y.add_(1.0)
    for u, v in zip(torch.autograd.grad(y, a, g), want):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_a_scaled_input_changed_before_backward_raises(backend):
    # Its scale's gradient reads it: autograd's version counter must catch
    # the edit, as in eager.
    xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64)
    x1 = xs[1].clone().requires_grad_()
    s1 = sc[1].clone().requires_grad_()
    x1_used = x1 * 1.0
    y = hrnet_fast.exchange([xs[0], x1_used], [None, s1], sh, backend=backend)
    x1_used.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_inference_tensor_as_an_unscaled_input(backend):
    # An inference-mode tensor cannot be saved for backward; an input
    # without a scale is not saved, so it may be one, as in eager.
    xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64)
    with torch.inference_mode():
        frozen = xs[0].clone()
    x1, s1 = xs[1].clone().requires_grad_(), sc[1].clone().requires_grad_()
    y = hrnet_fast.exchange([frozen, x1], [None, s1], sh, backend=backend)
    got = torch.autograd.grad(y.square().sum(), [x1, s1])
    x1r, s1r = x1.detach().clone().requires_grad_(), s1.detach().clone().requires_grad_()
    want = torch.autograd.grad(hrnet_fast.reference([xs[0], x1r], [None, s1r], sh).square().sum(), [x1r, s1r])
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v)


def _jvp_case(mode):
    xs, sc, sh = make_case([(7, 5), (4, 3), (7, 5)], c=3, dtype=torch.float64, partial_affine=True)
    primals = [xs, sc, sh]
    tangents = [[None if t is None else torch.randn_like(t) for t in group] for group in primals]
    return primals, tangents, dict(mode=mode, align_corners=mode == "bilinear")


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_forward_mode_ad(backend, mode):
    # torch.autograd.forward_ad: tangents on inputs, scales and shifts give
    # the reference's tangent (the op is linear before its ReLU).
    import torch.autograd.forward_ad as fwAD

    (xs, sc, sh), (dxs, dsc, dsh), kw = _jvp_case(mode)

    def run(fn):
        with fwAD.dual_level():
            dual = [[None if p is None else fwAD.make_dual(p, t) for p, t in zip(ps, ts)]
                    for ps, ts in zip((xs, sc, sh), (dxs, dsc, dsh))]
            y = fwAD.unpack_dual(fn(*dual, **kw))
            return y.primal, y.tangent

    y, dy = run(lambda *a, **k: hrnet_fast.exchange(*a, backend=backend, **k))
    ry, rdy = run(hrnet_fast.reference)
    assert dy is not None and rdy.abs().max() > 0
    torch.testing.assert_close(y, ry, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dy, rdy, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_func_jvp_and_backward_of_a_dual_call(backend):
    (xs, sc, sh), (dxs, dsc, dsh), kw = _jvp_case("bilinear")
    s_given = [s for s in sc if s is not None]

    def f(backend_or_ref):
        def g(x0, x1, x2, *rows):
            scales = [None] + list(rows)
            return (hrnet_fast.reference if backend_or_ref is None else
                    lambda *a, **k: hrnet_fast.exchange(*a, backend=backend_or_ref, **k))([x0, x1, x2], scales, sh, **kw)
        return g

    primals = (*xs, *s_given)
    tangents = (*dxs, *[t for t in dsc if t is not None])
    y, dy = torch.func.jvp(f(backend), primals, tangents)
    ry, rdy = torch.func.jvp(f(None), primals, tangents)
    torch.testing.assert_close(y, ry, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dy, rdy, rtol=1e-12, atol=1e-12)
    # A call with a tangent records its graph for backward as well.
    import torch.autograd.forward_ad as fwAD

    leaves = requires_grad(list(primals))
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(leaves, tangents)]
        out = f(backend)(*duals)
    got = torch.autograd.grad(out.square().sum(), leaves)
    want_leaves = requires_grad(list(primals))
    want = torch.autograd.grad(f(None)(*want_leaves).square().sum(), want_leaves)
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
