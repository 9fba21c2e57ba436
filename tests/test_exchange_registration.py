"""The C++ ops as torch sees them beyond what test_exchange.py's opcheck
covers: the check op's opcheck, torch.compile(fullgraph=True) with static and
dynamic shapes, absent and unusual affine rows, double backward."""
import pytest
import torch

import hrnet_fast
from exchange_cases import make_case, requires_grad

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="C++ extension not built")


def _op_args(shapes, channels_last, mode, align_corners, affine="all", grad=True, relu=True):
    """The op's arguments: affine "all" (a row per input), "some" (None
    entries) or "none" (empty lists)."""
    xs, sc, sh = make_case(shapes, dtype=torch.float64, channels_last=channels_last)
    if affine == "some":
        sc[0], sh[-1] = None, None
    if affine == "none":
        sc, sh = [], []
    if grad:
        xs, sc, sh = requires_grad(xs), requires_grad(sc), requires_grad(sh)
    return (xs, sc, sh, list(xs[0].shape[-2:]), mode, align_corners, relu)


def test_opcheck_check_op():
    xs, sc, sh, size, mode, _, _ = _op_args([(9, 7), (5, 4)], False, "nearest", False, "some", grad=False)
    torch.library.opcheck(torch.ops.hrnet_fast.exchange_check.default, (xs, sc, sh, [], [], [], size, mode))


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


@pytest.mark.parametrize("affine", ["all", "some", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shapes", [[(8, 6)] * 4, [(9, 7), (9, 7), (5, 4)]], ids=["same-size", "mixed"])
def test_absent_rows_are_the_identity(shapes, dtype, affine):
    # None entries and empty lists read as scale 1 / shift 0: exactly what
    # rows of ones and zeros give, and the reference to rounding.
    xs, sc, sh = make_case(shapes, c=19, dtype=dtype)
    if affine == "some":
        sc[1], sh[0] = None, None
    if affine == "none":
        sc, sh = [], []
    k, c = len(xs), xs[0].shape[1]
    ones, zeros = torch.ones(c), torch.zeros(c)
    full_s = [ones if s is None else s for s in sc] if sc else [ones] * k
    full_b = [zeros if b is None else b for b in sh] if sh else [zeros] * k
    for relu in (True, False):
        args = (list(shapes[0]), "nearest", False, relu)
        got = torch.ops.hrnet_fast.exchange(xs, sc, sh, *args)
        torch.testing.assert_close(got, torch.ops.hrnet_fast.exchange(xs, full_s, full_b, *args), rtol=0, atol=0)
        want = hrnet_fast.reference([x.double() for x in xs], [s.double() for s in full_s],
                                    [b.double() for b in full_b], relu=relu)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_gradcheck_each_given_row():
    xs, sc, sh, size, mode, ac, relu = _op_args([(6, 5), (3, 3), (3, 3)], False, "bilinear", True, "some")

    def f(x0, x1, x2, s1, s2, b0, b1):
        return torch.ops.hrnet_fast.exchange([x0, x1, x2], [None, s1, s2], [b0, b1, None], size, mode, ac, relu)

    assert torch.autograd.gradcheck(f, (*xs, sc[1], sc[2], sh[0], sh[1]))


def test_rows_of_another_dtype_strided_or_negated_are_read_right():
    # float64 rows for float32 inputs are converted; strided rows copied; a
    # lazily negated row (neg bit) must not be read raw.
    x = torch.randn(2, 3, 4, 4)
    s64 = torch.rand(3, dtype=torch.float64) + 0.5
    neg = torch._neg_view(torch.randn(3))
    strided = torch.randn(3, 2)[:, 1]
    assert neg.is_neg() and not strided.is_contiguous()
    got = torch.ops.hrnet_fast.exchange([x, x], [s64, strided], [neg, None], [4, 4], "nearest", False, True)
    want = torch.relu(x * s64.float().view(1, 3, 1, 1) + neg.resolve_neg().view(1, 3, 1, 1)
                      + x * strided.view(1, 3, 1, 1))
    torch.testing.assert_close(got, want)


def test_double_backward_raises_instead_of_a_silent_constant():
    xs, sc, sh = make_case([(6, 5), (3, 3)], c=3, dtype=torch.float64)
    xs, sc = requires_grad(xs), requires_grad(sc)
    y = hrnet_fast.exchange(xs, sc, sh, backend="cpu")
    (gx,) = torch.autograd.grad(y.sum(), [xs[1]], create_graph=True)
    with pytest.raises(RuntimeError, match="hrnet_fast::exchange_backward"):
        gx.sum().backward()


def test_grad_rows_keep_each_rows_dtype():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    s64 = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    b16 = torch.randn(3, dtype=torch.bfloat16).requires_grad_()
    hrnet_fast.exchange([x], [s64], [b16], backend="cpu").sum().backward()
    assert s64.grad.dtype == torch.float64 and b16.grad.dtype == torch.bfloat16
