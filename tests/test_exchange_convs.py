"""exchange(..., convs=...): stride-2 3x3 conv terms summed before the ReLU
(issue 7), on the CPU backend against F.conv2d + the reference."""
import pytest
import torch
import torch.nn.functional as F

import hrnet_fast
from exchange_cases import MODES, make_case, requires_grad

pytestmark = pytest.mark.skipif(not hrnet_fast.backends()["cpu"], reason="C++ extension not built")


def _conv_terms(n, c_out, parities, dtype, channels_last=False, bias=True):
    terms = []
    for c_in, (h, w) in parities:
        a = torch.randn(n, c_in, h, w, dtype=dtype)
        if channels_last:
            a = a.to(memory_format=torch.channels_last)
        terms.append((a, torch.randn(c_out, c_in, 3, 3, dtype=dtype) * 0.3,
                      torch.randn(c_out, dtype=dtype) if bias else None))
    return terms


@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("conv_sizes", [[(3, (18, 14))], [(3, (17, 13)), (2, (18, 13))]])
def test_forward_matches_conv2d_plus_reference(mode, align_corners, channels_last, conv_sizes):
    xs, sc, sh = make_case([(9, 7), (5, 4), (3, 2)], c=4, dtype=torch.float64, channels_last=channels_last)
    convs = _conv_terms(2, 4, conv_sizes, torch.float64, channels_last, bias=len(conv_sizes) == 1)
    got = hrnet_fast.exchange(xs, sc, sh, convs=convs, mode=mode, align_corners=align_corners, backend="cpu")
    want = hrnet_fast.reference(xs, sc, sh, mode=mode, align_corners=align_corners, relu=False)
    for a, w, b in convs:
        want = want + F.conv2d(a, w, b, stride=2, padding=1)
    torch.testing.assert_close(got, torch.relu(want))


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_gradcheck_with_convs(mode, align_corners):
    xs, sc, sh = make_case([(5, 4), (3, 2)], n=1, c=3, dtype=torch.float64)
    convs = _conv_terms(1, 3, [(2, (10, 7))], torch.float64)
    a, w, b = convs[0]
    args = requires_grad(xs + sc + sh + [a, w, b])

    def f(x0, x1, s0, s1, b0, b1, ca, cw, cb):
        return hrnet_fast.exchange([x0, x1], [s0, s1], [b0, b1], convs=[(ca, cw, cb)], mode=mode,
                                   align_corners=align_corners, backend="cpu")

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


def test_conv_only_exchange():
    xs, _, _ = make_case([(6, 5)], c=4, dtype=torch.float64, affine=False)
    convs = _conv_terms(2, 4, [(3, (12, 9))], torch.float64)
    got = hrnet_fast.exchange(xs, convs=convs, backend="cpu")
    a, w, b = convs[0]
    torch.testing.assert_close(got, torch.relu(xs[0] + F.conv2d(a, w, b, stride=2, padding=1)))
