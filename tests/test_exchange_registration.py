"""The C++ ops as torch sees them: opcheck (schema, fake kernel, autograd
registration, AOT dispatch) and torch.compile(fullgraph=True)."""
import pytest
import torch

import hrnet_fast
from exchange_cases import make_case, requires_grad

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="C++ extension not built")


def _dense_args(shapes, channels_last, mode, align_corners, relu=True, grad=True):
    xs, sc, sh = make_case(shapes, dtype=torch.float64, channels_last=channels_last)
    scales = torch.stack(sc)
    shifts = torch.stack(sh)
    if grad:
        xs = requires_grad(xs)
        scales.requires_grad_()
        shifts.requires_grad_()
    size = list(xs[0].shape[-2:])
    return (xs, scales, shifts, size, mode, align_corners, relu)


@pytest.mark.parametrize("mode,align_corners", [("nearest", False), ("bilinear", True)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_forward(mode, align_corners, channels_last):
    args = _dense_args([(9, 7), (5, 4), (3, 2)], channels_last, mode, align_corners)
    torch.library.opcheck(torch.ops.hrnet_fast.exchange.default, args)


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_backward(channels_last):
    xs, scales, shifts, size, mode, ac, relu = _dense_args([(9, 7), (5, 4)], channels_last, "bilinear", False,
                                                           grad=False)
    out = torch.ops.hrnet_fast.exchange(xs, scales, shifts, size, mode, ac, relu)
    grad = torch.randn_like(out)
    torch.library.opcheck(torch.ops.hrnet_fast.exchange_backward.default, (grad, out, xs, scales, mode, ac, relu))


def test_compile_fullgraph_forward_and_backward():
    xs, sc, sh = make_case([(16, 12), (8, 6), (4, 3)], c=6)

    def f(x0, x1, x2, s, b):
        return hrnet_fast.exchange([x0, x1, x2], [None, s, s], [None, b, b], mode="bilinear") * 2.0

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    a = requires_grad(xs + [sc[1], sh[1]])
    b = requires_grad(xs + [sc[1], sh[1]])
    y1, y2 = compiled(*a), f(*b)
    torch.testing.assert_close(y1, y2)
    g = torch.randn_like(y1)
    for u, v in zip(torch.autograd.grad(y1, a, g), torch.autograd.grad(y2, b, g)):
        torch.testing.assert_close(u, v)


def test_compile_dynamic_shapes_forward_and_backward():
    # The C++ autograd kernel takes the size as SymInts, so a graph compiled
    # for symbolic shapes serves new sizes without recompiling per size.
    def f(x0, x1, s):
        return hrnet_fast.exchange([x0, x1], [s, None], None, mode="bilinear") * 2.0

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for hw in [(8, 6), (11, 7), (14, 9)]:
        xs, sc, _ = make_case([hw, (hw[0] // 2, hw[1] // 2)], c=4)
        a, b = requires_grad(xs + [sc[0]]), requires_grad(xs + [sc[0]])
        y1, y2 = compiled(*a), f(*b)
        torch.testing.assert_close(y1, y2)
        g = torch.randn_like(y1)
        for u, v in zip(torch.autograd.grad(y1, a, g), torch.autograd.grad(y2, b, g)):
            torch.testing.assert_close(u, v)


def _list_args(shapes, channels_last, mode, align_corners, affine=True, grad=True):
    xs, sc, sh = make_case(shapes, dtype=torch.float64, channels_last=channels_last)
    if not affine:
        sc, sh = [], []
    if grad:
        xs, sc, sh = requires_grad(xs), requires_grad(sc), requires_grad(sh)
    return (xs, sc, sh, list(xs[0].shape[-2:]), mode, align_corners, True)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_lists(affine, channels_last):
    # exchange_lists: the per-input affine form behind the wrapper's fast path
    args = _list_args([(9, 7), (5, 4), (3, 2)], channels_last, "bilinear", False, affine=affine)
    torch.library.opcheck(torch.ops.hrnet_fast.exchange_lists.default, args)


@pytest.mark.parametrize("affine", [True, False])
def test_lists_op_equals_dense_op_and_reference(affine):
    xs, sc, sh, size, mode, ac, relu = _list_args([(9, 7), (9, 7), (5, 4)], False, "nearest", False, affine=affine,
                                                  grad=False)
    got = torch.ops.hrnet_fast.exchange_lists(xs, sc, sh, size, mode, ac, relu)
    k, c = len(xs), xs[0].shape[1]
    dense_s = torch.stack(sc) if affine else torch.ones(k, c, dtype=torch.float64)
    dense_b = torch.stack(sh) if affine else torch.zeros(k, c, dtype=torch.float64)
    torch.testing.assert_close(got, torch.ops.hrnet_fast.exchange(xs, dense_s, dense_b, size, mode, ac, relu),
                               rtol=0, atol=0)
    want = hrnet_fast.reference(xs, sc or None, sh or None, mode=mode)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("rows", ["in-place", "strided", "identity"])
@pytest.mark.parametrize("shapes", [[(8, 6)] * 4, [(5, 3)] * 2, [(9, 7), (9, 7), (5, 4)]],
                         ids=["same-size-8x6", "same-size-5x3", "mixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lists_op_reads_plain_rows_in_place(dtype, shapes, rows):
    # Plain CPU rows are read where they are; strided rows go through the
    # dense rows and the dispatched op. Both must give the dense op's
    # result exactly, and the reference's to rounding.
    xs, sc, sh = make_case(shapes, c=19, dtype=dtype)
    if rows == "strided":
        sc = [torch.stack([s, s], 1)[:, 0] for s in sc]
        assert not sc[0].is_contiguous()
    if rows == "identity":
        sc, sh = [], []
    k, c = len(xs), xs[0].shape[1]
    dense_s = torch.stack(sc) if sc else torch.ones(k, c)
    dense_b = torch.stack(sh) if sh else torch.zeros(k, c)
    for relu in (True, False):
        args = ([9, 7] if len(set(shapes)) > 1 else list(shapes[0]), "nearest", False, relu)
        got = torch.ops.hrnet_fast.exchange_lists(xs, sc, sh, *args)
        torch.testing.assert_close(got, torch.ops.hrnet_fast.exchange(xs, dense_s, dense_b, *args), rtol=0, atol=0)
        want = hrnet_fast.reference([x.double() for x in xs], [s.double() for s in sc] or None,
                                    [b.double() for b in sh] or None, size=tuple(args[0]), relu=relu)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_lists_op_gradcheck_each_row():
    args = _list_args([(6, 5), (3, 3)], False, "bilinear", True)
    xs, sc, sh, rest = args[0], args[1], args[2], args[3:]

    def f(x0, x1, s0, s1, b0, b1):
        return torch.ops.hrnet_fast.exchange_lists([x0, x1], [s0, s1], [b0, b1], *rest)

    assert torch.autograd.gradcheck(f, (*xs, *sc, *sh))


def test_lists_op_checks_its_rows():
    x = torch.randn(1, 2, 4, 4)
    op = torch.ops.hrnet_fast.exchange_lists
    with pytest.raises(ValueError, match=r"scales has 2 entries for 1 inputs"):
        op([x], [torch.ones(2)] * 2, [], [4, 4], "nearest", False, True)
    with pytest.raises(ValueError, match=r"shifts\[0\] must have shape \(2,\)"):
        op([x], [], [torch.zeros(3)], [4, 4], "nearest", False, True)
    with pytest.raises(TypeError, match=r"scales\[0\] must be floating point"):
        op([x], [torch.ones(2, dtype=torch.int64)], [], [4, 4], "nearest", False, True)


def test_rows_keep_their_dtype_and_negation():
    # float64 rows for float32 inputs are converted; a lazily negated row
    # (neg bit) must not be copied raw
    x = torch.randn(2, 3, 4, 4)
    s64 = torch.rand(3, dtype=torch.float64) + 0.5
    neg = torch._neg_view(torch.randn(3))
    assert neg.is_neg()
    got = torch.ops.hrnet_fast.exchange_lists([x], [s64], [neg], [4, 4], "nearest", False, True)
    want = torch.relu(x * s64.float().view(1, 3, 1, 1) + neg.resolve_neg().view(1, 3, 1, 1))
    torch.testing.assert_close(got, want)


def test_list_op_serves_the_backends_it_dispatches_to(monkeypatch):
    # exchange_lists runs the device's C++ kernel: CPU for "cpu"/"auto",
    # CUDA for "cuda", and for "auto" on CUDA tensors while CUDA leads
    # AUTO_CUDA_ORDER; Triton and the reference take the full path.
    ops = hrnet_fast.ops
    assert ops._takes_list_op("auto", True, False) and ops._takes_list_op("cpu", True, False)
    assert not ops._takes_list_op("triton", True, False) and not ops._takes_list_op("reference", True, False)
    assert ops._takes_list_op("cuda", False, True) and not ops._takes_list_op("triton", False, True)
    assert not ops._takes_list_op("auto", False, False)  # e.g. meta tensors
    monkeypatch.setattr(ops._C, "cuda_compiled", True, raising=False)
    monkeypatch.setattr(ops, "AUTO_CUDA_ORDER", ("cuda", "triton"))
    assert ops._takes_list_op("auto", False, True)
    monkeypatch.setattr(ops, "AUTO_CUDA_ORDER", ("triton", "cuda"))
    assert not ops._takes_list_op("auto", False, True)
    monkeypatch.setattr(ops._C, "cuda_compiled", False, raising=False)
    monkeypatch.setattr(ops, "AUTO_CUDA_ORDER", ("cuda", "triton"))
    assert not ops._takes_list_op("auto", False, True)


def test_wrapper_routes_common_calls_to_the_list_op():
    # the fast path is a speed feature: keep it from silently falling away
    x = [torch.randn(1, 2, 4, 4, requires_grad=True), torch.randn(1, 2, 2, 2)]
    s = [torch.rand(2, requires_grad=True), torch.rand(2)]
    assert "ExchangeListsFunction" in hrnet_fast.exchange(x, s, None).grad_fn.name()
    # None entries stand for cached identity rows, also on the list op
    assert "ExchangeListsFunction" in hrnet_fast.exchange(x, [None, s[1]], None).grad_fn.name()


@pytest.mark.parametrize("affine", [False, True])
def test_forward_mode_ad_is_refused_not_dropped(affine):
    # The C++ autograd has no jvp: a tangent must raise, never vanish (the
    # no-grad shortcut of the autograd kernels must not swallow it).
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(1, 2, 4, 4)
    rows = [torch.rand(2)] if affine else None
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.randn_like(x))
        with pytest.raises(RuntimeError, match="jvp"):
            hrnet_fast.exchange([dual], rows, None, backend="cpu")


def test_lists_op_with_scales_only_gradcheck():
    # one list given, the other empty: the backward returns rows for the
    # given list only (the flattened argument count differs from the dense op)
    xs, sc, _ = make_case([(5, 4), (3, 2)], c=3, dtype=torch.float64)
    xs, sc = requires_grad(xs), requires_grad(sc)

    def f(x0, x1, s0, s1):
        y = hrnet_fast.exchange([x0, x1], [s0, s1], None, mode="bilinear", backend="cpu")
        assert "ExchangeListsFunction" in y.grad_fn.name()
        return y

    assert torch.autograd.gradcheck(f, (*xs, *sc))
