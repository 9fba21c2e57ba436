"""float64 gradient checks of the Triton backend under TRITON_INTERPRET=1:
torch.autograd.gradcheck (fast mode: random projections, so a handful of
interpreter launches) of every input, scale and shift, and the conv terms'
gradients from the backward op against autograd through the reference."""
import pytest
import torch

import hrnet_fast
from _cases import MODES, assert_close_nonzero
from hrnet_fast.contract import saved_layout

D = torch.float64


def _leaf(*shape):
    return torch.randn(*shape, dtype=D).requires_grad_()


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_gradcheck_inputs_scales_shifts(mode, align_corners):
    # Odd sizes, a 1x1 source, one absent scale and one absent shift.
    torch.manual_seed(5)
    xs = [_leaf(1, 3, 5, 3), _leaf(1, 3, 3, 2), _leaf(1, 3, 1, 1)]
    s0, s2 = (torch.rand(3, dtype=D) + 0.5).requires_grad_(), (torch.rand(3, dtype=D) + 0.5).requires_grad_()
    b1, b2 = _leaf(3), _leaf(3)

    def f(x0, x1, x2, s0, s2, b1, b2):
        return hrnet_fast.exchange([x0, x1, x2], [s0, None, s2], [None, b1, b2], mode=mode,
                                   align_corners=align_corners, backend="triton")

    assert torch.autograd.gradcheck(f, (*xs, s0, s2, b1, b2), fast_mode=True, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_bilinear_downsizing_and_no_relu():
    # An input larger than the output (mmseg's 26 -> 25 at odd sizes) and a
    # smaller one; relu=False.
    torch.manual_seed(6)
    xs = [_leaf(1, 2, 5, 4), _leaf(1, 2, 7, 6), _leaf(1, 2, 2, 3)]
    s = (torch.rand(2, dtype=D) + 0.5).requires_grad_()

    def f(x0, x1, x2, s):
        return hrnet_fast.exchange([x0, x1, x2], [None, s, None], None, mode="bilinear", relu=False,
                                   backend="triton")

    assert torch.autograd.gradcheck(f, (*xs, s), fast_mode=True, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_more_inputs_than_slots():
    # Six inputs: two chained forward launches and two backward chunks.
    torch.manual_seed(7)
    shapes = [(4, 3), (2, 2), (4, 3), (1, 1), (3, 2), (2, 3)]
    xs = [_leaf(1, 2, h, w) for h, w in shapes]
    ss = [(torch.rand(2, dtype=D) + 0.5).requires_grad_() for _ in shapes]

    def f(*args):
        return hrnet_fast.exchange(list(args[:6]), list(args[6:]), None, mode="nearest", backend="triton")

    assert torch.autograd.gradcheck(f, (*xs, *ss), fast_mode=True, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("relu", [True, False])
def test_conv_term_gradients_from_the_backward_op(relu):
    # The one-pass kernel has no float64 forward (tl.dot), so its backward
    # formula is checked directly: the backward op in float64 against
    # autograd through F.conv2d + the reference. Conv inputs of both
    # parities (2H and 2H - 1), 5 and 7 channels.
    torch.manual_seed(8)
    x0, x1 = _leaf(2, 6, 4, 3), _leaf(2, 6, 2, 2)
    s1 = (torch.rand(6, dtype=D) + 0.5).requires_grad_()
    b0 = _leaf(6)
    a0, w0, c0 = _leaf(2, 5, 8, 6), (torch.randn(6, 5, 3, 3, dtype=D) * 0.2).requires_grad_(), _leaf(6)
    a1, w1 = _leaf(2, 7, 7, 5), (torch.randn(6, 7, 3, 3, dtype=D) * 0.2).requires_grad_()
    y = hrnet_fast.reference([x0, x1], [None, s1], [b0, None], convs=[(a0, w0, c0), (a1, w1, None)],
                             mode="bilinear", relu=relu)
    grad = torch.randn_like(y)
    want = torch.autograd.grad(y, [x0, x1, s1, b0, a0, w0, c0, a1, w1], grad)
    # What autograd passes: out only with a ReLU, the input that has a scale.
    gi, gs, gb, ga, gw = torch.ops.hrnet_fast.exchange_triton_backward(
        grad, y.detach() if relu else None, [None, x1.detach()], *saved_layout([x0, x1]), [s1.detach()], [1],
        [a0.detach(), a1.detach()], [w0.detach(), w1.detach()], "bilinear", False, relu)
    got = [gi[0], gi[1], gs[0], gb, ga[0], gw[0], gb, ga[1], gw[1]]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert_close_nonzero(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_forward_mode_ad(mode):
    # The kernels have no jvp: a call with tangents (on inputs, a scale and a
    # shift) runs the definition's ops, torch.func.jvp and forward_ad alike.
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(9)
    x0, x1, s1, b0 = torch.randn(1, 3, 5, 4, dtype=D), torch.randn(1, 3, 3, 2, dtype=D), torch.rand(3, dtype=D), \
        torch.randn(3, dtype=D)
    primals = (x0, x1, s1, b0)
    tangents = tuple(torch.randn_like(p) for p in primals)

    def f(backend):
        def g(x0, x1, s1, b0):
            return hrnet_fast.exchange([x0, x1], [None, s1], [b0, None], mode=mode, backend=backend)
        return g

    y, dy = torch.func.jvp(f("triton"), primals, tangents)
    ry, rdy = torch.func.jvp(f("reference"), primals, tangents)
    assert_close_nonzero(dy, rdy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, ry, rtol=1e-12, atol=1e-12)
    with fwAD.dual_level():
        out = fwAD.unpack_dual(f("triton")(*[fwAD.make_dual(p, t) for p, t in zip(primals, tangents)]))
    assert_close_nonzero(out.tangent, rdy, rtol=1e-12, atol=1e-12)
