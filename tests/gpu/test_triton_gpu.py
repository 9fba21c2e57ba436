"""Triton backend on CUDA (make gpu-check; skipped without a GPU by
tests/conftest.py). Lean by design, every test earns its compile time:

- the converted stage-4 rows of W18/W32/W48 (one-pass conv terms where a
  row has finer branches) against a float64 reference, forward and
  gradients, in fp32 (NCHW), fp16 and bf16 (channels_last); W48 seg at its
  production shape (batch 8, 512x1024 input) in bf16;
- bit-identical gradients across runs under deterministic algorithms;
- launch counts from the profiler: one per forward, three per backward;
- the first call of a new shape compiles one kernel per launch and times
  nothing (no autotuning by default); no compiled kernel spills;
- opcheck, torch.compile fullgraph, int64 offsets past 2^31 elements.
"""
from __future__ import annotations

import pytest
import torch

import hrnet_fast
from hrnet_fast.contract import saved_layout
from hrnet_fast.triton import aot_check, backward, conv_kernel, forward, tuning

pytestmark = pytest.mark.cuda
DEV = "cuda"
KERNELS = (forward.exchange_fwd_kernel, backward.exchange_bwd_rows_kernel, backward.exchange_bwd_cols_kernel,
           backward.exchange_bwd_reduce_kernel, conv_kernel.exchange_conv_kernel)


def rel_err(a, b):
    """max |a - b| / max |b|, in float64."""
    a, b = a.double(), b.double()
    assert b.abs().max() > 0
    return ((a - b).abs().max() / b.abs().max()).item()


def row_tensors(arch, row, batch, size, dtype, cl, seed=0):
    """Output branch `row` of a converted stage-4 exchange on CUDA (shapes
    from aot_check.hrnet_row): inputs, scales, shifts, conv terms (weights
    with their BN folded, channels_last as convert stores them)."""
    torch.manual_seed(seed)
    inputs, scales, shifts, terms = aot_check.hrnet_row(arch, row, batch, size, dtype, cl, "bilinear", convs=True)
    fmt = torch.channels_last if cl else torch.contiguous_format

    def act(t):
        return torch.randn(t.shape, device=DEV).to(dtype).contiguous(memory_format=fmt)

    def row_vec(t, lo=0.5):
        return None if t is None else torch.rand(t.shape, device=DEV) + lo

    xs = [act(t) for t in inputs]
    ss = [row_vec(t) for t in scales]
    bs = [None if t is None else torch.randn(t.shape, device=DEV) * 0.5 for t in shifts]
    convs = []
    for a, w, b in terms:
        wt = (torch.randn(w.shape, device=DEV) / (3 * w.shape[1] ** 0.5)).to(dtype)
        convs.append((act(a), wt.contiguous(memory_format=torch.channels_last),
                      (torch.randn(b.shape, device=DEV) * 0.5).to(dtype)))
    return xs, ss, bs, convs


def run(backend, xs, ss, bs, convs, grad, dtype=None, **kw):
    """Forward and the gradients of every tensor argument (leaves copied,
    cast to `dtype` when given: the float64 reference)."""
    def leaf(t):
        if t is None:
            return None
        t = t.detach()
        t = t.to(dtype) if dtype is not None else t.clone(memory_format=torch.preserve_format)
        return t.requires_grad_()

    xs, ss, bs = [leaf(t) for t in xs], [leaf(t) for t in ss], [leaf(t) for t in bs]
    terms = [tuple(leaf(t) for t in term) for term in convs]
    fn = hrnet_fast.reference if backend == "reference" else hrnet_fast.exchange
    extra = {} if backend == "reference" else {"backend": backend}
    y = fn(xs, ss, bs, convs=terms, mode="bilinear", **kw, **extra)
    (y.double() * grad.double()).sum().backward()
    leaves = [t for t in xs + ss + bs + [u for term in terms for u in term] if t is not None]
    return y.detach(), [t.grad for t in leaves]


# (arch, dtype, channels_last, rows, forward tolerance, gradient tolerance). float32 conv
# terms go through TF32 (10-bit mantissa), hence 1e-2 where a row has them.
CASES = [
    ("w48", torch.bfloat16, True, (0, 1, 2, 3), 1e-2, 2e-2),
    ("w32", torch.float16, True, (0, 2), 2e-3, 5e-3),
    ("w18", torch.float32, False, (1, 3), 1e-2, 1e-2),
]


@pytest.mark.parametrize("arch,dtype,cl,rows,ftol,gtol", CASES, ids=[c[0] for c in CASES])
def test_stage4_rows_against_float64(arch, dtype, cl, rows, ftol, gtol):
    for row in rows:
        xs, ss, bs, convs = row_tensors(arch, row, 2, (32, 64), dtype, cl, seed=row)
        kept = [x.clone() for x in xs]
        grad = torch.randn(xs[0].shape, device=DEV)
        y, got = run("triton", xs, ss, bs, convs, grad, relu=False)
        r, want = run("reference", xs, ss, bs, convs, grad, dtype=torch.float64, relu=False)
        assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last if cl else
                                                    torch.contiguous_format)
        assert rel_err(y, r) < ftol, (arch, row)
        for g, w in zip(got, want):  # ReLU off: rounding cannot flip the mask
            assert rel_err(g, w) < gtol, (arch, row, g.shape)
        for x, k in zip(xs, kept):
            assert torch.equal(x, k)


def test_w48_seg_production_shape_bf16():
    # Rows 0 and 2 at batch 8, 512x1024 input (branch 0 at 128x256), with ReLU.
    for row in (0, 2):
        xs, ss, bs, convs = row_tensors("w48", row, 8, (128, 256), torch.bfloat16, True, seed=10 + row)
        y = hrnet_fast.exchange(xs, ss, bs, convs=convs, mode="bilinear", backend="triton")
        r = hrnet_fast.reference([x.double() for x in xs], [s if s is None else s.double() for s in ss],
                                 [b if b is None else b.double() for b in bs],
                                 convs=[(a.double(), w.double(), c.double()) for a, w, c in convs], mode="bilinear")
        assert rel_err(y, r) < 1e-2


def test_backward_is_bit_identical_under_deterministic_algorithms():
    xs, ss, bs, convs = row_tensors("w48", 1, 4, (64, 96), torch.bfloat16, True, seed=3)
    grad = torch.randn(4, 96, 32, 48, device=DEV)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = run("triton", xs, ss, bs, convs[:0], grad)  # bilinear adjoints, no conv terms
        second = run("triton", xs, ss, bs, convs[:0], grad)
        y1 = hrnet_fast.exchange(xs, ss, bs, convs=convs, mode="bilinear", backend="triton")
        y2 = hrnet_fast.exchange(xs, ss, bs, convs=convs, mode="bilinear", backend="triton")
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(first[0], second[0]) and torch.equal(y1, y2)
    for a, b in zip(first[1], second[1]):
        assert torch.equal(a, b)


def _kernels_launched(fn):
    from torch.profiler import ProfilerActivity, profile

    fn()  # compiled outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
            and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]


def test_launch_counts():
    # Output branch 0 of W48: a same-size input and three interpolated ones.
    xs, ss, bs, convs = row_tensors("w48", 0, 2, (32, 64), torch.bfloat16, True)
    fwd = _kernels_launched(lambda: hrnet_fast.exchange(xs, ss, bs, mode="bilinear", backend="triton"))
    assert fwd == ["exchange_fwd_kernel"], fwd
    y = hrnet_fast.exchange(xs, ss, bs, mode="bilinear", backend="triton")
    grad = torch.randn_like(y)
    scale_of = [k for k, s in enumerate(ss) if s is not None]
    kept = [x if s is not None else None for x, s in zip(xs, ss)]
    sizes, cl = saved_layout(xs)
    bwd = _kernels_launched(lambda: torch.ops.hrnet_fast.exchange_triton_backward(
        grad, y, kept, sizes, cl, [ss[k] for k in scale_of], scale_of, [], [], "bilinear", False, True))
    assert bwd == ["exchange_bwd_rows_kernel", "exchange_bwd_cols_kernel", "exchange_bwd_reduce_kernel"], bwd
    same = [xs[0], xs[0].clone()]  # nothing interpolated: no H pass
    sizes, cl = saved_layout(same)
    bwd_same = _kernels_launched(lambda: torch.ops.hrnet_fast.exchange_triton_backward(
        grad, y, [None, None], sizes, cl, [], [], [], [], "nearest", False, True))
    assert bwd_same == ["exchange_bwd_rows_kernel", "exchange_bwd_reduce_kernel"], bwd_same
    xs, ss, bs, convs = row_tensors("w48", 3, 2, (32, 64), torch.bfloat16, True)
    conv = _kernels_launched(lambda: hrnet_fast.exchange(xs, ss, bs, convs=convs, backend="triton"))
    assert conv == ["exchange_conv_kernel"], conv


def _compiled(kernel):
    """The kernels compiled so far for a JIT function, on every device."""
    found = []
    for cache in kernel.device_caches.values():
        found += list(cache[0].values())
    return found


def test_first_call_compiles_once_and_times_nothing(monkeypatch):
    import triton
    import triton.testing

    assert not tuning.AUTOTUNE, "HRNET_FAST_TRITON_AUTOTUNE=1 is set: autotuning was asked for"

    def no_timing(*args, **kwargs):
        raise AssertionError("a call timed kernels (autotuning)")

    monkeypatch.setattr(triton.testing, "do_bench", no_timing)
    monkeypatch.setattr(triton.runtime.Autotuner, "run", no_timing)
    before = {k: len(_compiled(k)) for k in KERNELS}
    # A shape no other test uses: 40 channels, 23 x 13.
    xs = [torch.randn(3, 40, 23, 13, device=DEV), torch.randn(3, 40, 12, 7, device=DEV)]
    leaves = [x.clone().requires_grad_() for x in xs]
    y = hrnet_fast.exchange(leaves, [None, torch.rand(40, device=DEV)], None, mode="nearest", backend="triton")
    y.sum().backward()
    after = {k: len(_compiled(k)) for k in KERNELS}
    for k in KERNELS[:4]:  # forward, rows, cols, reduce: one new kernel each
        assert after[k] - before[k] == 1, (k.fn.__name__, before[k], after[k])


def test_opcheck():
    torch.manual_seed(0)
    xs = [torch.randn(2, 5, 9, 7, device=DEV), torch.randn(2, 5, 5, 4, device=DEV),
          torch.randn(2, 5, 3, 2, device=DEV)]
    ss, bs = [torch.rand(5, device=DEV) + 0.5], [torch.randn(5, device=DEV)]
    args = (xs, ss, [1], bs, [0], [], [], [], [], [9, 7], "bilinear", True, True)
    torch.library.opcheck(torch.ops.hrnet_fast.exchange_triton.default, args)
    out = torch.ops.hrnet_fast.exchange_triton(*args)
    sizes, cl = saved_layout(xs)
    torch.library.opcheck(torch.ops.hrnet_fast.exchange_triton_backward.default,
                          (torch.randn_like(out), out, [None, xs[1], None], sizes, cl, ss, [1], [], [], "bilinear",
                           True, True))
    a = torch.randn(2, 3, 18, 13, device=DEV).requires_grad_()
    w = torch.randn(5, 3, 3, 3, device=DEV).contiguous(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(5, device=DEV).requires_grad_()
    conv_args = ([x.requires_grad_() for x in xs[:2]], ss, [1], bs, [0], [a], [w], [b], [0], [9, 7], "nearest",
                 False, True)
    torch.library.opcheck(torch.ops.hrnet_fast.exchange_triton.default, conv_args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_torch_compile_fullgraph():
    xs, ss, bs, _ = row_tensors("w18", 0, 2, (32, 24), torch.float32, True)

    def f(x0, x1, x2, s1, b1):
        return hrnet_fast.exchange([x0, x1, x2], [None, s1, None], [None, b1, None], mode="bilinear",
                                   backend="triton")

    args = [xs[0], xs[1], xs[2], ss[1], bs[1]]
    f(*args)  # eager first: imports the backend outside the traced region
    la = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in args]
    lb = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in args]
    y_eager, y_comp = f(*la), torch.compile(f, fullgraph=True)(*lb)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y_eager)
    y_eager.backward(g)
    y_comp.backward(g)
    for a, b in zip(la, lb):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-4)


def test_past_2_to_the_31_elements():
    """int64 offsets: a 2^31+-element fp16 tensor plus a 1x1 input (its
    interpolation is a per-channel constant, so the expectation is
    elementwise); the backward of the single input."""
    n, c, h, w = 1, 2, 32768, 32769
    numel = n * c * h * w
    free, _ = torch.cuda.mem_get_info()
    if free < 16 * numel * 2:
        pytest.skip(f"needs ~{16 * numel * 2 / 2**30:.0f} GiB free GPU memory")
    x0 = torch.randn(n, c, h, w, device=DEV, dtype=torch.float16)
    x1 = torch.randn(n, c, 1, 1, device=DEV, dtype=torch.float16)
    s0, s1 = torch.rand(c, device=DEV) + 0.5, torch.rand(c, device=DEV) + 0.5
    b0 = torch.randn(c, device=DEV)
    y = hrnet_fast.exchange([x0, x1], [s0, s1], [b0, None], mode="bilinear", backend="triton")
    const = (x1.float().view(c) * s1 + b0).view(1, c, 1, 1)
    with torch.no_grad():
        for i in range(0, h, 4096):
            rows = slice(i, i + 4096)
            want = torch.relu(x0[:, :, rows].float() * s0.view(1, c, 1, 1) + const)
            torch.testing.assert_close(y[:, :, rows].float(), want, rtol=2e-3, atol=2e-3)
    del y
    gi, gs, gb, _, _ = torch.ops.hrnet_fast.exchange_triton_backward(
        torch.ones(n, c, h, w, device=DEV, dtype=torch.float16), x0, [x0], *saved_layout([x0]), [s0], [0], [], [],
        "nearest", False, True)
    with torch.no_grad():
        positives = torch.zeros(c, device=DEV, dtype=torch.float64)
        for i in range(0, h, 4096):
            rows = slice(i, i + 4096)
            mask = (x0[:, :, rows] > 0).float()
            torch.testing.assert_close(gi[0][:, :, rows].float(), mask * s0.view(1, c, 1, 1), rtol=2e-3, atol=2e-3)
            positives += mask.sum(dim=(0, 2, 3)).double()
    # float32 partial sums of about 10^9 ones: exact per band, rounded across bands.
    torch.testing.assert_close(gb.double(), positives, rtol=1e-4, atol=1.0)


def test_empty_batch():
    xs = [torch.randn(0, 4, 6, 5, device=DEV), torch.randn(0, 4, 3, 3, device=DEV)]
    assert hrnet_fast.exchange(xs, None, None, mode="bilinear", backend="triton").shape == (0, 4, 6, 5)


def test_no_spills_at_the_tables_shapes():
    """Last: the shipped table's shapes (aot_check compiles the same ones
    without a GPU) compiled afresh by this Triton, each kernel's spill count
    from the driver."""
    for kernel in KERNELS:
        kernel.device_caches.clear()
    case = aot_check.TABLE_CASE
    for arch in ("w18", "w32", "w48"):
        for row in range(4):
            xs, ss, bs, convs = row_tensors(arch, row, case["batch"], case["size"], case["dtype"], case["cl"])
            if convs:
                hrnet_fast.exchange(xs, ss, bs, convs=convs, mode="bilinear", backend="triton")
            if arch == "w48":
                inputs, scales, shifts, _ = aot_check.hrnet_row(arch, row, convs=False, mode="bilinear", **case)
                lx = [torch.randn(t.shape, device=DEV).to(t.dtype).contiguous(memory_format=torch.channels_last)
                      for t in inputs]
                ls = [None if t is None else torch.rand(t.shape, device=DEV) + 0.5 for t in scales]
                lb = [None if t is None else torch.randn(t.shape, device=DEV) for t in shifts]
                run("triton", lx, ls, lb, [], torch.randn(lx[0].shape, device=DEV))
    seen = 0
    for kernel in KERNELS:
        for compiled in _compiled(kernel):
            compiled._init_handles()
            seen += 1
            assert compiled.n_spills == 0, (kernel.fn.__name__, compiled.n_regs, compiled.n_spills)
    assert seen >= 13  # 4 forward, 4 x 2-3 backward, 9 conv (some shared)
