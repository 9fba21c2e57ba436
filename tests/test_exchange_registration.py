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
