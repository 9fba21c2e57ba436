"""hrnet_fast.exchange on every backend against its definition.

One tester class (torchvision's RoIOpTester style) runs each backend --
cpu, cuda and triton (on a GPU: marked `cuda`; Triton on CPU tensors runs
under the interpreter in tests/interpreter, its own process) and the
reference itself where a test can fail for it -- over dtypes, memory
formats, modes and odd sizes, on fresh random data (never zeros): forward
against hrnet_fast.reference (affine, F.interpolate(size=...), sum,
ReLU), float64 gradcheck, autograd's saved tensors, forward-mode AD,
conv terms, torch.library.opcheck. What only one backend has (the CPU's
order of operations and thread counts, the C++ op's own checks) and the
errors, which come before any backend runs, follow the class.
"""
import pytest
import torch
import torch.nn.functional as F

import hrnet_fast
import hrnet_fast.backend
from hrnet_fast.contract import make_call
from exchange_cases import (BAD_CALLS, MODES, SHAPES, assert_nearest_like_interpolate, backward_inputs, make_case,
                            nearest_adjoint, rel_err, requires_grad, saved_bytes)

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="C++ extension not built")

ON_GPU = pytest.mark.cuda  # conftest skips these without a CUDA device
FUSED = ["cpu", pytest.param("cuda", marks=ON_GPU), pytest.param("triton", marks=ON_GPU)]
EVERY = FUSED + ["reference"]
# Where ATen's two nearest formulas part (kernels/interp.h): (source,
# output) per axis, outputs with H + W above 128 (the CPU's generic kernel:
# float64 products for float64) and at most 128 (vectorised: float32).
NEAREST_RATIOS = [((45, 14), (129, 46)), ((21, 30), (69, 86)), ((2, 6), (82, 74)), ((39, 26), (66, 88)),
                  ((45, 5), (129, 5)), ((7, 45), (7, 129)), ((14, 21), (46, 69)), ((3, 9), (123, 11))]


def device_of(backend: str) -> str:
    return "cuda" if backend in ("cuda", "triton") else "cpu"


def run(backend, *args, **kw):
    if backend == "reference":
        return hrnet_fast.reference(*args, **kw)
    return hrnet_fast.exchange(*args, backend=backend, **kw)


def conv_terms(n, c_out, parities, dtype, channels_last=False, bias=True, device="cpu"):
    terms = []
    for c_in, (h, w) in parities:
        a = torch.randn(n, c_in, h, w, dtype=dtype, device=device)
        if channels_last:
            a = a.to(memory_format=torch.channels_last)
        terms.append((a, torch.randn(c_out, c_in, 3, 3, dtype=dtype, device=device) * 0.3,
                      torch.randn(c_out, dtype=dtype, device=device) if bias else None))
    return terms


def of_args(backend, mode, align_corners, relu, size=None):
    """f(x..., scale..., shift...) for gradcheck: one third of the arguments each."""
    def f(*args):
        k = len(args) // 3
        return run(backend, list(args[:k]), list(args[k:2 * k]), list(args[2 * k:]), size=size, mode=mode,
                   align_corners=align_corners, relu=relu)
    return f


class TestExchange:
    # ---- forward against the reference ---------------------------------

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode,align_corners", MODES)
    @pytest.mark.parametrize("channels_last", [False, True])
    @pytest.mark.parametrize("shapes,size", SHAPES)
    def test_float64(self, backend, shapes, size, mode, align_corners, channels_last):
        xs, sc, sh = make_case(shapes, dtype=torch.float64, channels_last=channels_last, partial_affine=True,
                               device=device_of(backend))
        kw = dict(size=size, mode=mode, align_corners=align_corners)
        got = run(backend, xs, sc, sh, **kw)
        want = hrnet_fast.reference(xs, sc, sh, **kw)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode,align_corners", MODES)
    @pytest.mark.parametrize("relu", [True, False])
    def test_float32(self, backend, mode, align_corners, relu):
        xs, sc, sh = make_case([(17, 9), (9, 5), (5, 3), (3, 2)], c=18, device=device_of(backend))
        kw = dict(size=(17, 9), mode=mode, align_corners=align_corners, relu=relu)
        got = run(backend, xs, sc, sh, **kw)
        torch.testing.assert_close(got, hrnet_fast.reference(xs, sc, sh, **kw), rtol=1e-5, atol=1e-5)
        if not relu:
            assert (got < 0).any()

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    @pytest.mark.parametrize("channels_last,c", [(False, 5), (True, 5), (True, 2)], ids=["nchw", "nhwc", "nhwc-c2"])
    @pytest.mark.parametrize("source,size", NEAREST_RATIOS)
    def test_nearest_reads_the_sources_f_interpolate_reads(self, backend, source, size, channels_last, c, dtype):
        # Ratios where ATen's two nearest formulas part: the pixels read
        # are F.interpolate's on the tensors' device, bit for bit.
        assert_nearest_like_interpolate(backend, source, size, c, channels_last, dtype, device_of(backend))

    @pytest.mark.parametrize("backend", FUSED)
    def test_explicit_size_larger_than_every_input(self, backend):
        xs, sc, sh = make_case([(8, 5), (4, 3)], dtype=torch.float64, device=device_of(backend))
        got = run(backend, xs, sc, sh, size=(15, 9), mode="bilinear")
        torch.testing.assert_close(got, hrnet_fast.reference(xs, sc, sh, size=(15, 9), mode="bilinear"))

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode", ["nearest", "bilinear"])
    def test_strided_and_mixed_layout_inputs(self, backend, mode):
        base, sc, sh = make_case([(20, 14), (10, 7), (5, 4)], c=6, dtype=torch.float64, device=device_of(backend))
        xs = [base[0][:, :, ::2, ::2],                                  # strided view
              base[1].to(memory_format=torch.channels_last),            # other layout than inputs[0]
              base[2].transpose(2, 3).contiguous().transpose(2, 3)]     # permuted strides
        got = run(backend, xs, sc, sh, size=(10, 7), mode=mode)
        torch.testing.assert_close(got, hrnet_fast.reference(xs, sc, sh, size=(10, 7), mode=mode))

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("channels_last", [False, True])
    @pytest.mark.parametrize("shapes,size", [
        ([(7, 6), (8, 6)], (7, 6)),                  # mmseg at odd sizes: a x2 upsample of 4 resized 8 -> 7
        ([(4, 5), (5, 7), (2, 3), (9, 11)], (4, 5)),  # larger on both axes, mixed with smaller inputs
        ([(6, 5), (12, 3)], (6, 5)),                 # larger along H, smaller along W
    ])
    def test_bilinear_resizes_larger_inputs_down(self, backend, shapes, size, channels_last, align_corners):
        xs, sc, sh = make_case(shapes, n=1, c=3, dtype=torch.float64, channels_last=channels_last,
                               partial_affine=True, device=device_of(backend))
        kw = dict(size=size, mode="bilinear", align_corners=align_corners)
        torch.testing.assert_close(run(backend, xs, sc, sh, **kw), hrnet_fast.reference(xs, sc, sh, **kw))
        leaves = [x.clone().requires_grad_() for x in xs]
        assert torch.autograd.gradcheck(lambda *t: run(backend, list(t), sc, sh, **kw), leaves)

    @pytest.mark.parametrize("backend", FUSED)
    def test_nan_propagates_like_reference(self, backend):
        xs, sc, sh = make_case([(6, 4), (3, 2)], dtype=torch.float64, device=device_of(backend))
        xs[0][0, 1, 2, 3] = float("nan")
        xs[1][1, 2, 0, 0] = float("nan")
        for mode in ("nearest", "bilinear"):
            got = run(backend, xs, sc, sh, mode=mode)
            want = hrnet_fast.reference(xs, sc, sh, mode=mode)
            assert torch.equal(got.isnan(), want.isnan())
            torch.testing.assert_close(got, want, equal_nan=True)

    # ---- every backend, the reference included --------------------------

    @pytest.mark.parametrize("backend", EVERY)
    def test_single_input_is_affine_plus_relu(self, backend):
        xs, sc, sh = make_case([(9, 7)], dtype=torch.float64, device=device_of(backend))
        torch.testing.assert_close(run(backend, xs, sc, sh),
                                   torch.relu(xs[0] * sc[0].view(1, -1, 1, 1) + sh[0].view(1, -1, 1, 1)))

    @pytest.mark.parametrize("backend", EVERY)
    @pytest.mark.parametrize("rows", [None, [None]], ids=["no-rows", "none-rows"])
    def test_output_is_never_an_input(self, backend, rows):
        # One same-size input, no affine, no ReLU: nothing to compute, and
        # still a new tensor (an in-place op on it must not edit the input).
        x = torch.randn(2, 3, 5, 4, device=device_of(backend))
        kept = x.clone()
        y = run(backend, [x], rows, rows, relu=False)
        assert y is not x and y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        torch.testing.assert_close(y, x, rtol=0, atol=0)
        y.add_(1.0)
        assert torch.equal(x, kept)

    @pytest.mark.parametrize("backend", EVERY)
    def test_inputs_are_not_modified(self, backend):
        xs, sc, sh = make_case([(15, 9), (8, 5)], channels_last=True, device=device_of(backend))
        for t in xs + sc + sh:
            t.requires_grad_()
        before = [t.detach().clone() for t in xs + sc + sh]
        run(backend, xs, sc, sh, mode="bilinear").sum().backward()
        for a, b in zip(xs + sc + sh, before):
            assert torch.equal(a, b)

    @pytest.mark.parametrize("backend", EVERY)
    def test_empty_batch(self, backend):
        xs, sc, sh = make_case([(8, 5), (4, 3)], n=0, device=device_of(backend))
        assert run(backend, xs, sc, sh).shape == (0, 5, 8, 5)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("partial", [False, True], ids=["no-affine", "none-entries"])
    def test_identity_affine_made_in_inference_mode_does_not_leak_into_autograd(self, backend, partial):
        # Nothing made for a call under inference_mode (identity rows, cached
        # choices) may be saved for a backward later.
        xs, sc, sh = make_case([(6, 4), (3, 2)], affine=partial, partial_affine=partial, device=device_of(backend))
        with torch.inference_mode():
            run(backend, xs, sc, sh)
        leaves = [x.clone().requires_grad_() for x in xs]
        rows = [None if s is None else s.clone().requires_grad_() for s in sc] if partial else None
        run(backend, leaves, rows, sh).sum().backward()
        assert all(t.grad is not None for t in leaves + [r for r in rows or [] if r is not None])

    # ---- conv terms (issue 7) ---------------------------------------------

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode,align_corners", MODES)
    @pytest.mark.parametrize("channels_last", [False, True])
    @pytest.mark.parametrize("conv_sizes", [[(3, (18, 14))], [(3, (17, 13)), (2, (18, 13))]])
    def test_conv_terms_are_conv2d_plus_the_reference(self, backend, mode, align_corners, channels_last,
                                                      conv_sizes):
        device = device_of(backend)
        xs, sc, sh = make_case([(9, 7), (5, 4), (3, 2)], c=4, dtype=torch.float64, channels_last=channels_last,
                               device=device)
        convs = conv_terms(2, 4, conv_sizes, torch.float64, channels_last, bias=len(conv_sizes) == 1, device=device)
        got = run(backend, xs, sc, sh, convs=convs, mode=mode, align_corners=align_corners)
        want = hrnet_fast.reference(xs, sc, sh, mode=mode, align_corners=align_corners, relu=False)
        for a, w, b in convs:
            want = want + F.conv2d(a, w, b, stride=2, padding=1)
        torch.testing.assert_close(got, torch.relu(want))

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode,align_corners", MODES)
    def test_gradcheck_with_convs(self, backend, mode, align_corners):
        device = device_of(backend)
        xs, sc, sh = make_case([(5, 4), (3, 2)], n=1, c=3, dtype=torch.float64, device=device)
        a, w, b = conv_terms(1, 3, [(2, (10, 7))], torch.float64, device=device)[0]
        args = requires_grad(xs + sc + sh + [a, w, b])

        def f(x0, x1, s0, s1, b0, b1, ca, cw, cb):
            return run(backend, [x0, x1], [s0, s1], [b0, b1], convs=[(ca, cw, cb)], mode=mode,
                       align_corners=align_corners)

        assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)

    @pytest.mark.parametrize("backend", FUSED)
    def test_conv_only_exchange(self, backend):
        device = device_of(backend)
        xs, _, _ = make_case([(6, 5)], c=4, dtype=torch.float64, affine=False, device=device)
        a, w, b = conv_terms(2, 4, [(3, (12, 9))], torch.float64, device=device)[0]
        got = run(backend, xs, convs=[(a, w, b)])
        torch.testing.assert_close(got, torch.relu(xs[0] + F.conv2d(a, w, b, stride=2, padding=1)))

    # ---- gradients ----------------------------------------------------------

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode,align_corners", MODES)
    @pytest.mark.parametrize("channels_last", [False, True])
    @pytest.mark.parametrize("relu", [True, False])
    def test_gradcheck(self, backend, mode, align_corners, channels_last, relu):
        xs, sc, sh = make_case([(7, 5), (4, 3), (2, 2)], n=2, c=3, dtype=torch.float64, channels_last=channels_last,
                               device=device_of(backend))
        assert torch.autograd.gradcheck(of_args(backend, mode, align_corners, relu), requires_grad(xs + sc + sh),
                                        eps=1e-6, atol=1e-7)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("channels_last", [False, True])
    @pytest.mark.parametrize("shapes", [[(5, 4)] * 4, [(5, 4)] * 2 + [(3, 2)], [(4, 3)] * 5 + [(2, 2)]],
                             ids=["four-same", "two-same-one-smaller", "five-same-one-smaller"])
    def test_gradcheck_several_same_size_inputs(self, backend, shapes, channels_last):
        # The CPU backward's first pass fuses up to four same-size inputs;
        # more take a second path. Ten channels: channels_last sums blocks
        # of eight in registers and the last two apart.
        xs, sc, sh = make_case(shapes, n=1, c=10, dtype=torch.float64, channels_last=channels_last,
                               device=device_of(backend))
        assert torch.autograd.gradcheck(of_args(backend, "bilinear", False, True), requires_grad(xs + sc + sh),
                                        eps=1e-6, atol=1e-7)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_gradcheck_nearest_exact_factors(self, backend, channels_last):
        # Nearest upsampling by exactly 2, 4 and 8 along W takes the
        # grouped-sum adjoint; 3 -> 16 (not an integer factor) the tap walk.
        xs, sc, sh = make_case([(8, 16), (4, 8), (2, 4), (1, 2), (2, 3)], n=1, c=3, dtype=torch.float64,
                               channels_last=channels_last, device=device_of(backend))
        assert torch.autograd.gradcheck(of_args(backend, "nearest", False, True), requires_grad(xs + sc + sh),
                                        eps=1e-6, atol=1e-7)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode,align_corners", MODES)
    def test_gradcheck_odd_upsampling_and_explicit_size(self, backend, mode, align_corners):
        xs, sc, sh = make_case([(5, 3), (3, 2), (1, 1)], n=1, c=2, dtype=torch.float64, device=device_of(backend))
        assert torch.autograd.gradcheck(of_args(backend, mode, align_corners, True, size=(9, 7)),
                                        requires_grad(xs + sc + sh), eps=1e-6, atol=1e-7)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_nearest_float64_adjoint_follows_the_forward_sources(self, backend, channels_last):
        # The backward gathers from the sources the forward read (on the
        # CPU in float64 here the float64 formula): the adjoint of
        # F.interpolate's forward, which autograd through F.interpolate is
        # not at these sizes (nearest_adjoint).
        device = device_of(backend)
        x = torch.randn(1, 2, 45, 21, dtype=torch.float64, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x0 = torch.randn(1, 2, 129, 69, dtype=torch.float64, device=device)
        a = x.clone().requires_grad_()
        y = run(backend, [x0, a], relu=False)
        assert torch.equal(y, hrnet_fast.reference([x0, x], relu=False))
        g = torch.randn_like(y)
        torch.testing.assert_close(torch.autograd.grad(y, a, g)[0], nearest_adjoint(x, g), rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("mode,align_corners", MODES)
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_float32_grads_match_reference(self, backend, mode, align_corners, channels_last):
        xs, sc, sh = make_case([(17, 9), (9, 5), (5, 3), (3, 2)], c=18, channels_last=channels_last,
                               device=device_of(backend))
        a, b = requires_grad(xs + sc + sh), requires_grad(xs + sc + sh)
        kw = dict(mode=mode, align_corners=align_corners)
        y = run(backend, a[:4], a[4:8], a[8:], **kw)
        r = hrnet_fast.reference(b[:4], b[4:8], b[8:], **kw)
        g = torch.randn_like(r)
        for i, (u, v) in enumerate(zip(torch.autograd.grad(y, a, g), torch.autograd.grad(r, b, g))):
            assert u.shape == v.shape
            assert rel_err(u, v) < 1e-5, i

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("dtype,tol,grad_tol", [(torch.bfloat16, 1e-2, 2e-2), (torch.float16, 2e-3, 4e-3)])
    @pytest.mark.parametrize("mode", ["nearest", "bilinear"])
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_half_precision_accumulates_in_float32(self, backend, dtype, tol, grad_tol, mode, channels_last):
        # Inputs, output and input gradients in half precision; the sums,
        # the masked gradient, adjoints and per-channel sums in float32
        # (exact-factor nearest here: 16x12 from 8x6 and 4x3), against the
        # reference in float64.
        xs, sc, sh = make_case([(16, 12), (8, 6), (4, 3)], c=18, dtype=dtype, channels_last=channels_last,
                               device=device_of(backend))
        got = run(backend, xs, sc, sh, mode=mode)
        assert got.dtype == dtype
        b = requires_grad([t.double() for t in xs + sc + sh])
        want = hrnet_fast.reference(b[:3], b[3:6], b[6:], mode=mode)
        assert rel_err(got, want.detach()) < tol
        a = requires_grad(xs + sc + sh)
        y = run(backend, a[:3], a[3:6], a[6:], mode=mode)
        g = torch.randn(y.shape, dtype=torch.float64, device=y.device)
        for i, (u, v) in enumerate(zip(torch.autograd.grad(y, a, g.to(dtype)), torch.autograd.grad(want, b, g))):
            assert u.dtype == a[i].dtype and u.shape == v.shape, i
            assert rel_err(u.double(), v) < grad_tol, (i, rel_err(u.double(), v))

    @pytest.mark.parametrize("backend", FUSED)
    def test_only_some_arguments_require_grad(self, backend):
        xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64, device=device_of(backend))
        x0 = xs[0].clone().requires_grad_()
        s1 = sc[1].clone().requires_grad_()
        g0, gs = torch.autograd.grad(run(backend, [x0, xs[1]], [sc[0], s1], sh, mode="bilinear").square().sum(),
                                     [x0, s1])
        x0r, s1r = x0.detach().clone().requires_grad_(), s1.detach().clone().requires_grad_()
        r = hrnet_fast.reference([x0r, xs[1]], [sc[0], s1r], sh, mode="bilinear")
        w0, ws = torch.autograd.grad(r.square().sum(), [x0r, s1r])
        torch.testing.assert_close(g0, w0)
        torch.testing.assert_close(gs, ws)

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_backward_is_deterministic(self, backend, channels_last):
        # The same bits from run to run and, on the CPU, whatever the thread
        # count: partial sums over a partition fixed by the shapes.
        xs, sc, sh = make_case([(32, 24), (16, 12), (8, 6), (4, 3)], n=4, c=18, channels_last=channels_last,
                               device=device_of(backend))
        g = torch.randn(4, 18, 32, 24, device=xs[0].device)

        def grads():
            args = requires_grad(xs + sc + sh)
            return torch.autograd.grad(run(backend, args[:4], args[4:8], args[8:], mode="bilinear"), args, g)

        threads = torch.get_num_threads()
        try:
            first, second = grads(), grads()
            torch.set_num_threads(1)
            single = grads()
        finally:
            torch.set_num_threads(threads)
        for a, b, c in zip(first, second, single):
            assert torch.equal(a, b)
            assert torch.equal(a, c)

    @pytest.mark.parametrize("backend", FUSED)
    def test_works_under_deterministic_algorithms(self, backend):
        xs, sc, sh = make_case([(8, 6), (4, 3)], device=device_of(backend))
        args = requires_grad(xs + sc + sh)
        prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            run(backend, args[:2], args[2:4], args[4:], mode="bilinear").sum().backward()
        finally:
            torch.use_deterministic_algorithms(prev)
        assert all(a.grad is not None for a in args)

    # ---- what autograd keeps (issue 24, point 5) --------------------------

    @pytest.mark.parametrize("backend", FUSED)
    @pytest.mark.parametrize("relu", [True, False])
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_saves_what_the_backward_reads_as_eager_does(self, backend, relu, channels_last):
        # Kept: the output when there is a ReLU (its mask), the scaled input
        # and its scale; not the unscaled inputs (no gradient reads them):
        # exactly what eager keeps for the reference's ops.
        xs, sc, sh = make_case([(8, 6), (4, 3), (8, 6)], c=4, channels_last=channels_last,
                               device=device_of(backend))
        leaves = requires_grad(xs)
        s1 = sc[1].clone().requires_grad_()
        kw = dict(mode="bilinear", relu=relu)
        y, got = saved_bytes(lambda: run(backend, leaves, [None, s1, None], sh, **kw))
        _, want = saved_bytes(lambda: hrnet_fast.reference(leaves, [None, s1, None], sh, **kw))
        expected = leaves[1].untyped_storage().nbytes() + s1.untyped_storage().nbytes()
        assert got == want == expected + (y.untyped_storage().nbytes() if relu else 0)

    @pytest.mark.parametrize("backend", EVERY)
    @pytest.mark.parametrize("relu", [True, False])
    def test_unscaled_inputs_may_change_before_backward(self, backend, relu):
        # An in-place edit of an input without a scale (or of the output
        # without a ReLU) between forward and backward: as in eager,
        # nothing reads them.
        xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64, device=device_of(backend))
        a = requires_grad(xs + [sc[1]])
        x0, x1 = a[0] * 1.0, a[1] * 1.0  # non-leaves, so in-place is allowed
        y = run(backend, [x0, x1], [None, a[2]], sh, mode="bilinear", relu=relu)
        g = torch.randn_like(y)
        want = torch.autograd.grad(hrnet_fast.reference([x0, x1], [None, a[2]], sh, mode="bilinear", relu=relu), a,
                                   g, retain_graph=True)
        x0.mul_(3.0)
        if not relu:
            y.add_(1.0)
        for u, v in zip(torch.autograd.grad(y, a, g), want):
            torch.testing.assert_close(u, v)

    @pytest.mark.parametrize("backend", EVERY)
    def test_a_scaled_input_changed_before_backward_raises(self, backend):
        # Its scale's gradient reads it: autograd's version counter catches
        # the edit, as in eager.
        xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64, device=device_of(backend))
        x1 = xs[1].clone().requires_grad_()
        s1 = sc[1].clone().requires_grad_()
        x1_used = x1 * 1.0
        y = run(backend, [xs[0], x1_used], [None, s1], sh)
        x1_used.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()

    @pytest.mark.parametrize("backend", EVERY)
    def test_inference_tensor_as_an_unscaled_input(self, backend):
        # An inference tensor cannot be saved for backward; an input without
        # a scale is not saved, so it may be one, as in eager.
        xs, sc, sh = make_case([(8, 6), (4, 3)], dtype=torch.float64, device=device_of(backend))
        with torch.inference_mode():
            frozen = xs[0].clone()
        x1, s1 = xs[1].clone().requires_grad_(), sc[1].clone().requires_grad_()
        got = torch.autograd.grad(run(backend, [frozen, x1], [None, s1], sh).square().sum(), [x1, s1])
        x1r, s1r = x1.detach().clone().requires_grad_(), s1.detach().clone().requires_grad_()
        want = torch.autograd.grad(hrnet_fast.reference([xs[0], x1r], [None, s1r], sh).square().sum(), [x1r, s1r])
        for u, v in zip(got, want):
            torch.testing.assert_close(u, v)

    # ---- forward-mode AD (issue 24, point 9) -------------------------------

    @staticmethod
    def _jvp_case(mode, device):
        xs, sc, sh = make_case([(7, 5), (4, 3), (7, 5)], c=3, dtype=torch.float64, partial_affine=True,
                               device=device)
        primals = [xs, sc, sh]
        tangents = [[None if t is None else torch.randn_like(t) for t in group] for group in primals]
        return primals, tangents, dict(mode=mode, align_corners=mode == "bilinear")

    @pytest.mark.parametrize("backend", EVERY)
    @pytest.mark.parametrize("mode", ["nearest", "bilinear"])
    def test_forward_mode_ad(self, backend, mode):
        # torch.autograd.forward_ad: tangents on inputs, scales and shifts
        # give the reference's tangent (the op is linear before its ReLU).
        import torch.autograd.forward_ad as fwAD

        (xs, sc, sh), (dxs, dsc, dsh), kw = self._jvp_case(mode, device_of(backend))

        def dual_run(fn):
            with fwAD.dual_level():
                dual = [[None if p is None else fwAD.make_dual(p, t) for p, t in zip(ps, ts)]
                        for ps, ts in zip((xs, sc, sh), (dxs, dsc, dsh))]
                y = fwAD.unpack_dual(fn(*dual, **kw))
                return y.primal, y.tangent

        y, dy = dual_run(lambda *a, **k: run(backend, *a, **k))
        ry, rdy = dual_run(hrnet_fast.reference)
        assert dy is not None and rdy.abs().max() > 0
        torch.testing.assert_close(y, ry, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dy, rdy, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("backend", EVERY)
    def test_torch_func_jvp_and_backward_of_a_dual_call(self, backend):
        import torch.autograd.forward_ad as fwAD

        (xs, sc, sh), (dxs, dsc, _), kw = self._jvp_case("bilinear", device_of(backend))

        def f(name):
            def g(x0, x1, x2, *rows):
                return run(name, [x0, x1, x2], [None] + list(rows), sh, **kw)
            return g

        primals = (*xs, *[s for s in sc if s is not None])
        tangents = (*dxs, *[t for t in dsc if t is not None])
        y, dy = torch.func.jvp(f(backend), primals, tangents)
        ry, rdy = torch.func.jvp(f("reference"), primals, tangents)
        torch.testing.assert_close(y, ry, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dy, rdy, rtol=1e-12, atol=1e-12)
        # A call with a tangent records its graph for backward as well.
        leaves = requires_grad(list(primals))
        with fwAD.dual_level():
            out = f(backend)(*[fwAD.make_dual(p, t) for p, t in zip(leaves, tangents)])
        got = torch.autograd.grad(out.square().sum(), leaves)
        want_leaves = requires_grad(list(primals))
        want = torch.autograd.grad(f("reference")(*want_leaves).square().sum(), want_leaves)
        for u, v in zip(got, want):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)

    # ---- the ops as torch sees them ---------------------------------------

    @pytest.mark.parametrize("backend", [pytest.param("cpu"), pytest.param("cuda", marks=ON_GPU)])
    @pytest.mark.parametrize("affine", ["all", "some", "none"])
    @pytest.mark.parametrize("mode,align_corners", [("nearest", False), ("bilinear", True)])
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_opcheck(self, backend, mode, align_corners, channels_last, affine):
        # Schema, fake kernel, autograd registration and AOT dispatch of the
        # forward, and of the backward as autograd calls it (out only with a
        # ReLU, inputs only where a scale is).
        xs, sc, sh = make_case([(9, 7), (5, 4), (3, 2)], dtype=torch.float64, channels_last=channels_last,
                               device=device_of(backend))
        if affine == "some":
            sc[0], sh[-1] = None, None
        if affine == "none":
            sc, sh = [], []
        size = list(xs[0].shape[-2:])
        torch.library.opcheck(torch.ops.hrnet_fast.exchange.default,
                              (requires_grad(xs), requires_grad(sc), requires_grad(sh), size, mode, align_corners,
                               True))
        # The backward's cases: bilinear, every affine and layout.
        if mode != "bilinear":
            return
        kept, sizes, cl = backward_inputs(xs[:2], sc[:2])
        for relu in (True, False) if affine == "some" else (True,):
            out = torch.ops.hrnet_fast.exchange(xs[:2], sc[:2], sh[:2], size, mode, align_corners, relu)
            torch.library.opcheck(torch.ops.hrnet_fast.exchange_backward.default,
                                  (torch.randn_like(out), out if relu else None, kept, sizes, cl, sc[:2], mode,
                                   align_corners, relu))


# ---- one backend's own properties ---------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("plane", [(8, 6), (5, 3), (1, 1)])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [37, 48])  # channels_last: 16-channel blocks, or the row loop
def test_cpu_same_size_float32_is_bit_exact_in_its_order(count, plane, relu, channels_last, channels):
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
    assert torch.equal(hrnet_fast.exchange(xs, sc, sh, relu=relu, backend="cpu"), want)


def test_cpu_nearest_float64_45_to_129_reads_rows_15_and_30():
    # Issue 24's case: F.interpolate in float64 on the CPU computes this
    # index in float64; a float32 product would read rows 14 and 29.
    x = torch.arange(45, dtype=torch.float64).view(1, 1, 45, 1).expand(1, 2, 45, 3).contiguous()
    y = hrnet_fast.exchange([x], size=(129, 3), relu=False, backend="cpu")
    assert y[0, 0, [43, 86], 0].tolist() == [15.0, 30.0]


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


# ---- bad arguments: one error, whichever backend ----------------------------

# Structural errors (not lists, not tensors: contract.make_call) come before
# any backend is chosen; the value rules (csrc/checks.cpp) run whichever
# backend was asked for, and before it is known to run here at all.
@pytest.mark.parametrize("backend", ["auto", "reference", "cpu", "cuda", "triton"])
@pytest.mark.parametrize("make,exc,match", BAD_CALLS)
def test_a_bad_call_gets_one_error_whichever_backend(make, exc, match, backend):
    args, kwargs = make()
    if match is None:  # a valid call (the conv case that lands exactly): CPU tensors
        if backend in ("cuda", "triton"):
            pytest.skip("a valid call on CPU tensors runs on the CPU backends only")
        hrnet_fast.exchange(*args, backend=backend, **kwargs)
        return
    with pytest.raises(exc, match=match):
        hrnet_fast.exchange(*args, backend=backend, **kwargs)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        hrnet_fast.exchange([torch.randn(1, 2, 4, 4)], backend="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_unavailable_gpu_backends_are_runtime_errors():
    with pytest.raises(RuntimeError, match="backend 'cuda' is unavailable"):
        hrnet_fast.exchange([torch.randn(1, 2, 4, 4)], backend="cuda")
    assert not hrnet_fast.backends()["triton"]
    with pytest.raises(RuntimeError, match="backend 'triton' is unavailable"):
        hrnet_fast.exchange([torch.randn(1, 2, 4, 4)], backend="triton")


def test_direct_op_calls_are_checked_in_cpp():
    x = torch.randn(1, 2, 4, 4)
    op = torch.ops.hrnet_fast.exchange
    with pytest.raises(ValueError, match=r"scales\[0\] must have shape \(2,\), got \(3,\)"):
        op([x], [torch.ones(3)], [], [4, 4], "nearest", False, True)
    with pytest.raises(ValueError, match="scales has 2 entries for 1 inputs"):
        op([x], [torch.ones(2)] * 2, [], [4, 4], "nearest", False, True)
    with pytest.raises(ValueError, match="mode must be"):
        op([x], [], [], [4, 4], "area", False, True)
    with pytest.raises(ValueError, match="larger than the output size"):
        op([x], [], [], [2, 2], "nearest", False, True)
    with pytest.raises(TypeError, match=r"shifts\[0\] must be floating point"):
        op([x], [], [torch.ones(2, dtype=torch.int64)], [4, 4], "nearest", False, True)
    bwd = torch.ops.hrnet_fast.exchange_backward
    with pytest.raises(ValueError, match="must be the same 4-D shape"):
        bwd(torch.ones(1, 2, 3, 3), x, [None], [4, 4], [False], [], "nearest", False, True)
    with pytest.raises(ValueError, match="out .* is needed when relu is true"):
        bwd(x, None, [None], [4, 4], [False], [], "nearest", False, True)
    with pytest.raises(ValueError, match=r"inputs\[0\] is needed: the gradient of scales\[0\] reads it"):
        bwd(x, x, [None], [4, 4], [False], [torch.ones(2)], "nearest", False, True)
    with pytest.raises(ValueError, match=r"input_sizes has 2 values and channels_last 2 for 1 inputs"):
        bwd(x, x, [None], [4, 4], [False, False], [], "nearest", False, True)
    with pytest.raises(ValueError, match=r"inputs\[0\] has shape \(1, 2, 4, 4\), not \(1, 2, 2, 2\)"):
        bwd(torch.ones(1, 2, 2, 2), None, [x], [2, 2], [False], [], "nearest", False, False)
