"""Triton backend on CUDA: accuracy in every dtype, large shapes (past 2^31
elements when memory allows), determinism, torch.compile and opcheck.

Runs where a GPU is present (make gpu-check); skipped elsewhere by
tests/conftest.py.
"""
from __future__ import annotations

import pytest
import torch

import hrnet_fast
import hrnet_fast.triton.config

pytestmark = pytest.mark.cuda

MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
CASES = {
    "odd": ((15, 9), [(8, 5), (3, 2), (1, 1)]),
    "pow2": ((64, 48), [(32, 24), (16, 12), (8, 6)]),
    "hrnet_odd": ((33, 65), [(17, 33), (9, 17), (5, 9)]),
}
DEV = "cuda"


def make(n, c, size, smaller, dtype=torch.float32, channels_last=False):
    shapes = [size] + list(smaller)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(n, c, h, w, device=DEV).to(dtype).contiguous(memory_format=fmt) for h, w in shapes]
    pdt = torch.float64 if dtype == torch.float64 else torch.float32
    ss = [torch.rand(c, device=DEV, dtype=pdt) + 0.5 for _ in shapes]
    bs = [torch.randn(c, device=DEV, dtype=pdt) * 0.5 for _ in shapes]
    return xs, ss, bs


def leaves(ts):
    return [t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in ts]


def grads(fn, xs, ss, bs, grad, **kw):
    xs, ss, bs = leaves(xs), leaves(ss), leaves(bs)
    y = fn(xs, ss, bs, **kw)
    (y.float() * grad.float()).sum().backward()
    return y.detach(), [t.grad for t in xs + ss + bs]


def triton_fn(xs, ss, bs, **kw):
    return hrnet_fast.exchange(xs, ss, bs, backend="triton", **kw)


def ref_fn(xs, ss, bs, **kw):
    return hrnet_fast.reference(xs, ss, bs, **kw)


def rel_err(a, b):
    """max |a - b| / max |b|, computed in float64."""
    a, b = a.double(), b.double()
    assert b.abs().max() > 0
    return ((a - b).abs().max() / b.abs().max()).item()


def as64(ts):
    return [t.detach().double() for t in ts]


@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("channels", [18, 48])
def test_float32_forward_backward(mode, align_corners, case, channels_last, channels):
    size, smaller = CASES[case]
    xs, ss, bs = make(2, channels, size, smaller, channels_last=channels_last)
    kept = [x.clone() for x in xs]
    grad = torch.randn(2, channels, *size, device=DEV)
    kw = dict(mode=mode, align_corners=align_corners)
    y, got = grads(triton_fn, xs, ss, bs, grad, **kw)
    r, want = grads(ref_fn, xs, ss, bs, grad, **kw)
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    for g, w in zip(got, want):
        assert w.abs().max() > 0
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    for x, k in zip(xs, kept):
        assert torch.equal(x, k)


@pytest.mark.skipif(not hrnet_fast.triton.config.AUTOTUNE, reason="HRNET_FAST_TRITON_AUTOTUNE=0: nothing is tuned")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_first_call_tunes_and_is_right(channels_last):
    """The first call on a new shape runs every backward config on the same
    partial-sum buffers; its scale and shift gradients must not keep any
    config's leftovers. Shapes used by no other test, so this call tunes."""
    c, size, smaller = 40 + channels_last, (23, 13), [(12, 7), (6, 4)]
    xs, ss, bs = make(3, c, size, smaller, channels_last=channels_last)
    grad = torch.randn(3, c, *size, device=DEV)
    kw = dict(mode="nearest", align_corners=False)
    _, want = grads(ref_fn, xs, ss, bs, grad, **kw)
    for _ in range(2):  # tuning call, then the cached config
        _, got = grads(triton_fn, xs, ss, bs, grad, **kw)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)], ids=["fp16", "bf16"])
@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_half_precision_against_float64(dtype, tol, mode, align_corners, channels_last):
    size, smaller = CASES["hrnet_odd"]
    xs, ss, bs = make(2, 36, size, smaller, dtype=dtype, channels_last=channels_last)
    kw = dict(mode=mode, align_corners=align_corners)
    y = triton_fn(xs, ss, bs, **kw)
    assert y.dtype == dtype
    assert rel_err(y, ref_fn(as64(xs), as64(ss), as64(bs), **kw)) < tol
    # Gradients without the ReLU: a rounded output may flip the mask of
    # near-zero pixels, which says nothing about the kernels' accuracy.
    grad = torch.randn(2, 36, *size, device=DEV).to(dtype)
    kw["relu"] = False
    _, got = grads(triton_fn, xs, ss, bs, grad, **kw)
    _, want = grads(ref_fn, as64(xs), as64(ss), as64(bs), grad.double(), **kw)
    for g, w in zip(got, want):
        assert rel_err(g, w) < tol


def test_hrnet_w48_segmentation_shape_bf16_channels_last():
    # Output branch 0 of HRNet-W48 at a 512x1024 input, batch 8.
    xs, ss, bs = make(8, 48, (128, 256), [(64, 128), (32, 64), (16, 32)], dtype=torch.bfloat16,
                      channels_last=True)
    for mode, ac in MODES:
        y = triton_fn(xs, ss, bs, mode=mode, align_corners=ac)
        r = ref_fn([x.float() for x in xs], ss, bs, mode=mode, align_corners=ac)
        assert rel_err(y, r) < 1e-2


def test_large_batch_many_programs_float32():
    xs, ss, bs = make(64, 72, (64, 128), [(32, 64), (16, 32)])
    grad = torch.randn(64, 72, 64, 128, device=DEV)
    y, got = grads(triton_fn, xs, ss, bs, grad, mode="bilinear")
    r, want = grads(ref_fn, xs, ss, bs, grad, mode="bilinear")
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-3)


def test_past_2_to_the_31_elements():
    """int64 offsets on a 2^31+-element tensor. Forward: plus a 1x1 input,
    whose interpolation is a per-channel constant, so the expectation is
    elementwise. Backward: a single input (a 1x1 source would make one
    program gather the whole output: the gather's known slow case)."""
    n, c, h, w = 1, 2, 32768, 32769  # 2 * 32768 * 32769 > 2^31 elements
    numel = n * c * h * w
    assert numel > 2**31
    free, _ = torch.cuda.mem_get_info()
    if free < 8 * numel * 2:  # x0, y, grad, grad_x0 in fp16 and chunked temporaries
        pytest.skip(f"needs ~{8 * numel * 2 / 2**30:.0f} GiB free GPU memory, {free / 2**30:.0f} GiB free")
    chunk = 4096
    x0 = torch.randn(n, c, h, w, device=DEV, dtype=torch.float16)
    x1 = torch.randn(n, c, 1, 1, device=DEV, dtype=torch.float16)
    s0, s1 = torch.rand(c, device=DEV) + 0.5, torch.rand(c, device=DEV) + 0.5
    b0, b1 = torch.randn(c, device=DEV), torch.randn(c, device=DEV)
    y = hrnet_fast.exchange([x0, x1], [s0, s1], [b0, b1], mode="bilinear", backend="triton")
    const = (x1.float().view(c) * s1 + b1 + b0).view(1, c, 1, 1)
    for i in range(0, h, chunk):  # chunks keep the float32 temporaries small
        rows = slice(i, i + chunk)
        want = torch.relu(x0[:, :, rows].float() * s0.view(1, c, 1, 1) + const)
        torch.testing.assert_close(y[:, :, rows].float(), want, rtol=2e-3, atol=2e-3)
    del y

    x0r = x0.requires_grad_()
    s0r, b0r = s0.clone().requires_grad_(), b0.clone().requires_grad_()
    y = hrnet_fast.exchange([x0r], [s0r], [b0r], backend="triton")
    y.backward(torch.ones_like(y))
    positives = torch.zeros(c, device=DEV, dtype=torch.float64)
    weighted = torch.zeros(c, device=DEV, dtype=torch.float64)
    with torch.no_grad():  # no graph over the checking temporaries
        for i in range(0, h, chunk):
            rows = slice(i, i + chunk)
            mask = (y[:, :, rows] > 0).float()
            torch.testing.assert_close(x0r.grad[:, :, rows].float(), mask * s0.view(1, c, 1, 1),
                                       rtol=2e-3, atol=2e-3)
            positives += mask.sum(dim=(0, 2, 3)).double()
            weighted += (mask * x0[:, :, rows].float()).sum(dim=(0, 2, 3)).double()
    torch.testing.assert_close(b0r.grad.double(), positives, rtol=1e-4, atol=1.0)
    torch.testing.assert_close(s0r.grad.double(), weighted, rtol=1e-3, atol=1e2)


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_backward_is_bit_identical_under_deterministic_algorithms(mode, align_corners):
    xs, ss, bs = make(4, 48, (128, 96), [(64, 48), (32, 24), (16, 12)], dtype=torch.bfloat16,
                      channels_last=True)
    grad = torch.randn(4, 48, 128, 96, device=DEV).to(torch.bfloat16)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        _, first = grads(triton_fn, xs, ss, bs, grad, mode=mode, align_corners=align_corners)
        _, second = grads(triton_fn, xs, ss, bs, grad, mode=mode, align_corners=align_corners)
    finally:
        torch.use_deterministic_algorithms(prev)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_torch_compile_fullgraph():
    xs, ss, bs = make(2, 18, (32, 24), [(16, 12), (8, 6)], channels_last=True)

    def f(x0, x1, x2, s1, b1):
        return hrnet_fast.exchange([x0, x1, x2], [None, s1, None], [None, b1, None], mode="bilinear",
                                   backend="triton")

    args = [xs[0], xs[1], xs[2], ss[1], bs[1]]
    f(*args)  # eager first: imports the backend outside the traced region
    compiled = torch.compile(f, fullgraph=True)
    la, lb = leaves(args), leaves(args)
    y_eager, y_comp = f(*la), compiled(*lb)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y_eager)
    y_eager.backward(g)
    y_comp.backward(g)
    for a, b in zip(la, lb):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-4)


def test_exchange_conv_matches_reference():
    a = torch.randn(2, 8, 31, 20, device=DEV)
    w = torch.randn(18, 8, 3, 3, device=DEV) * 0.2
    b = torch.randn(18, device=DEV)
    xs, ss, bs = make(2, 18, (16, 10), [(8, 5)])
    la, lr = leaves([a, w, b] + xs), leaves([a, w, b] + xs)
    y = hrnet_fast.exchange(la[3:], ss, bs, convs=[(la[0], la[1], la[2])], mode="bilinear", backend="triton")
    r = hrnet_fast.reference(lr[3:], ss, bs, convs=[(lr[0], lr[1], lr[2])], mode="bilinear")
    # Convolutions may use TF32 on Ampere and newer for float32.
    torch.testing.assert_close(y, r, rtol=1e-2, atol=1e-2)
    g = torch.randn_like(y)
    y.backward(g)
    r.backward(g)
    for p, q in zip(la, lr):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)], ids=["fp16", "bf16"])
def test_exchange_conv_hrnet_w18_branch3_half_precision(dtype, tol):
    """Output branch 3 of HRNet-W18: 144 channels, the last links of three
    downsample chains (18, 36 and 72 input channels at twice the size),
    channels_last, against a float64 reference."""
    n, size = 4, (8, 16)
    cl = torch.channels_last
    x3 = torch.randn(n, 144, *size, device=DEV).to(dtype).contiguous(memory_format=cl)
    s3, b3 = torch.rand(144, device=DEV) + 0.5, torch.randn(144, device=DEV)
    convs = []
    for c_in in (18, 36, 72):
        a = torch.randn(n, c_in, 2 * size[0], 2 * size[1], device=DEV).to(dtype).contiguous(memory_format=cl)
        w = (torch.randn(144, c_in, 3, 3, device=DEV) / (3 * c_in ** 0.5)).to(dtype)
        convs.append((a, w, torch.randn(144, device=DEV).to(dtype)))
    y = hrnet_fast.exchange([x3], [s3], [b3], convs=convs, backend="triton")
    assert y.dtype == dtype and y.is_contiguous(memory_format=cl)
    r = hrnet_fast.reference([x3.double()], [s3.double()], [b3.double()],
                             convs=[(a.double(), w.double(), b.double()) for a, w, b in convs])
    assert rel_err(y, r) < tol


def test_opcheck():
    import hrnet_fast.triton  # noqa: F401  registers the ops

    xs, ss, bs = make(2, 5, (9, 7), [(5, 4), (3, 2)])
    for mode, ac in MODES:
        args = (xs, ss[1:], [1, 2], bs[:1], [0], [], [], [], [], [9, 7], mode, ac, True)
        torch.library.opcheck(torch.ops.hrnet_fast.exchange_triton.default, args)
        out = torch.ops.hrnet_fast.exchange_triton(*args)
        bargs = (torch.randn_like(out), out, xs, ss[1:], [1, 2], [], [], mode, ac, True)
        torch.library.opcheck(torch.ops.hrnet_fast.exchange_triton_backward.default, bargs)


def test_auto_backend_on_cuda_matches_reference():
    xs, ss, bs = make(1, 18, (16, 12), [(8, 6)])
    y = hrnet_fast.exchange(xs, ss, bs, mode="nearest", backend="auto")
    torch.testing.assert_close(y, ref_fn(xs, ss, bs, mode="nearest"), rtol=1e-5, atol=1e-5)


def test_empty_batch():
    xs = [torch.randn(0, 4, 6, 5, device=DEV), torch.randn(0, 4, 3, 3, device=DEV)]
    assert triton_fn(xs, None, None, mode="bilinear").shape == (0, 4, 6, 5)
