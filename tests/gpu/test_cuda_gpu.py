"""The CUDA C++ backend (backend="cuda") on a GPU: semantics against the
reference, gradients, agreement with Triton, determinism, CUDA graphs, op
registration, kernel launches per call and a compute-sanitizer run. Skipped
without a CUDA device.

Paths of the kernels (kernels/exchange_plan.h picks them; the CTest
emulation checks the picks and runs the bodies on the CPU):
  forward   a compiled input pattern (HRNet's rows: same-size inputs, then
            exact nearest factors or bilinear) with 16-byte packs, or the
            run-time kernel (other kinds and counts, narrow packs or single
            elements, 64-bit index math past 2^31 elements), per layout;
  backward  output tiles with the adjoint in shared memory (2 launches), plus
            a finishing kernel for pixels straddling tiles (bilinear) and
            for inputs gathered whole (strong downsizing): 3 launches."""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import hrnet_fast
import hrnet_fast.contract

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not hrnet_fast.backends()["cuda"], reason="hrnet_fast._C built without CUDA or no GPU"),
]

DEV = "cuda"
# (input sizes, output size): odd sizes, 2^k factors, 1x1, one axis only.
SHAPES = [
    ([(15, 9), (8, 5)], (15, 9)),
    ([(33, 17), (17, 9), (9, 5), (5, 3)], (33, 17)),
    ([(7, 7), (1, 1)], (7, 7)),
    ([(16, 12), (8, 6), (4, 3), (2, 2)], (16, 12)),
    ([(8, 9), (8, 5), (4, 9)], (8, 9)),
]
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
# Relative error (norm) against a float64 reference computed from the same,
# already rounded, inputs.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make_case(shapes, *, n=2, c=24, dtype=torch.float32, channels_last=False, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    pdtype = hrnet_fast.contract.affine_dtype(dtype)
    xs = [torch.randn(n, c, h, w, generator=g).to(DEV, dtype) for h, w in shapes]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    scales = [(torch.rand(c, generator=g) + 0.5).to(DEV, pdtype) for _ in shapes]
    shifts = [(torch.randn(c, generator=g) * 0.5).to(DEV, pdtype) for _ in shapes]
    return xs, scales, shifts


def leaf(ts, dtype=None):
    return [t.detach().to(dtype or t.dtype).clone().requires_grad_() for t in ts]


def run(backend, xs, scales, shifts, size, mode, ac, relu, grad=None):
    """Output and gradients (inputs, scales, shifts) of one backend."""
    xs_, sc_, sh_ = leaf(xs), leaf(scales), leaf(shifts)
    y = hrnet_fast.exchange(xs_, sc_, sh_, size=size, mode=mode, align_corners=ac, relu=relu, backend=backend)
    if grad is None:
        return y, None
    y.backward(grad)
    return y, [t.grad for t in xs_ + sc_ + sh_]


def reference64(xs, scales, shifts, size, mode, ac, relu, grad, mask=None):
    """float64 reference. With `mask`, the ReLU is replaced by that fixed
    mask, so half-precision runs are compared with the kernel's own mask (a
    rounded output near zero may legitimately flip it)."""
    xs_, sc_, sh_ = leaf(xs, torch.float64), leaf(scales, torch.float64), leaf(shifts, torch.float64)
    y = hrnet_fast.reference(xs_, sc_, sh_, size=size, mode=mode, align_corners=ac, relu=relu and mask is None)
    if mask is not None:
        y = y * mask
    y.backward(grad.double())
    return y.detach(), [t.grad for t in xs_ + sc_ + sh_]


@pytest.mark.parametrize("shapes,size", SHAPES)
@pytest.mark.parametrize("mode,ac", MODES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_backward_match_reference(shapes, size, mode, ac, channels_last, dtype):
    # c=24: 16-byte packs for every dtype on channels_last; c=18 takes
    # 4-byte packs (half precision) or single elements (float32).
    for c in (24, 18):
        xs, scales, shifts = make_case(shapes, c=c, dtype=dtype, channels_last=channels_last)
        grad = torch.randn(2, c, *size, device=DEV).to(dtype)
        y, grads = run("cuda", xs, scales, shifts, size, mode, ac, True, grad)
        want_cl = channels_last and not xs[0].is_contiguous()
        assert y.dtype == dtype and y.shape == (2, c, *size)
        assert y.is_contiguous(memory_format=torch.channels_last if want_cl else torch.contiguous_format)
        mask = None if dtype == torch.float32 else (y > 0).double()
        ry, rgrads = reference64(xs, scales, shifts, size, mode, ac, True, grad, mask)
        assert rel_err(y, ry) < TOL[dtype], "forward"
        for i, (a, b) in enumerate(zip(grads, rgrads)):
            assert a.dtype == (xs + scales + shifts)[i].dtype
            assert rel_err(a, b) < TOL[dtype] * 2, f"grad {i}"
        for x, gx in zip(xs, grads):
            assert gx.is_contiguous(memory_format=hrnet_fast.contract.follow_format(x))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_large_images(channels_last, mode):
    """Many tiles, several blocks per SM and more tiles than resident
    blocks (the kernels loop over their tiles)."""
    shapes, size = [(256, 256), (128, 128), (64, 64)], (256, 256)
    xs, scales, shifts = make_case(shapes, n=3, c=64, channels_last=channels_last)
    grad = torch.randn(3, 64, *size, device=DEV)
    y, grads = run("cuda", xs, scales, shifts, size, mode, False, True, grad)
    # 12.6M outputs: a few within rounding of zero may flip the ReLU mask,
    # so the reference uses the kernel's mask.
    ry, rgrads = reference64(xs, scales, shifts, size, mode, False, True, grad, mask=(y > 0).double())
    assert rel_err(y, ry) < 1e-5
    for a, b in zip(grads, rgrads):
        assert rel_err(a, b) < 1e-5


def hrnet_rows():
    """Every row of 2-, 3- and 4-branch modules: (i + 1) inputs at the output
    size (the identity and the finer branches' chains), then the coarser
    branches at 1/2, 1/4, 1/8 -- the compiled patterns. Branch sizes keep W a
    multiple of 8, so NCHW takes them too."""
    sizes = [(32, 64), (16, 32), (8, 16), (4, 8)]
    rows = []
    for branches in (2, 3, 4):
        for i in range(branches):
            rows.append(([sizes[i]] * (i + 1) + sizes[i + 1:branches], sizes[i]))
    return rows


def affine_subset(scales, shifts, which):
    """'none': no affines at all; 'some': alternate inputs get a scale or a
    shift (None for the others); 'all': both for every input."""
    if which == "none":
        return [], []
    if which == "some":
        return ([s if k % 2 else None for k, s in enumerate(scales)],
                [b if k % 2 == 0 else None for k, b in enumerate(shifts)])
    return scales, shifts


def run_affine(backend, xs, scales, shifts, size, mode, ac, relu, grad):
    """Output and gradients of inputs and of the given affine rows."""
    xs_ = leaf(xs)
    sc_ = [None if t is None else t.detach().clone().requires_grad_() for t in scales]
    sh_ = [None if t is None else t.detach().clone().requires_grad_() for t in shifts]
    y = hrnet_fast.exchange(xs_, sc_ or None, sh_ or None, size=size, mode=mode, align_corners=ac, relu=relu,
                            backend=backend)
    y.backward(grad)
    return y, [t.grad for t in xs_ + [t for t in sc_ + sh_ if t is not None]]


def reference_affine(xs, scales, shifts, size, mode, ac, grad, mask):
    """float64 reference with the kernel's ReLU mask (see reference64)."""
    xs_ = leaf(xs, torch.float64)
    sc_ = [None if t is None else t.detach().double().requires_grad_() for t in scales]
    sh_ = [None if t is None else t.detach().double().requires_grad_() for t in shifts]
    y = hrnet_fast.reference(xs_, sc_ or None, sh_ or None, size=size, mode=mode, align_corners=ac, relu=False)
    y = y * mask
    y.backward(grad.double())
    return y.detach(), [t.grad for t in xs_ + [t for t in sc_ + sh_ if t is not None]]


@pytest.mark.parametrize("row", range(len(hrnet_rows())))
@pytest.mark.parametrize("channels_last", [False, True])
def test_hrnet_rows(row, channels_last):
    """The compiled patterns (and the tiled backward without straddling
    pixels for nearest), every dtype, mode and affine variant."""
    shapes, size = hrnet_rows()[row]
    for dtype in DTYPES:
        for (mode, ac), which in itertools.product(MODES, ("none", "some", "all")):
            xs, scales, shifts = make_case(shapes, c=32, dtype=dtype, channels_last=channels_last, seed=row)
            scales, shifts = affine_subset(scales, shifts, which)
            grad = torch.randn(2, 32, *size, device=DEV).to(dtype)
            y, grads = run_affine("cuda", xs, scales, shifts, size, mode, ac, True, grad)
            ry, rgrads = reference_affine(xs, scales, shifts, size, mode, ac, grad, (y > 0).double())
            what = f"{dtype} {mode} ac={ac} affine={which}"
            assert rel_err(y, ry.clamp_min(0)) < TOL[dtype], what
            for i, (a, b) in enumerate(zip(grads, rgrads)):
                assert rel_err(a, b) < 2 * TOL[dtype], f"{what}: grad {i}"


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ac", [False, True])
def test_downsizing(channels_last, dtype, ac):
    """Bilinear inputs larger than the output: slightly (mmseg's 26 -> 25:
    straddling pixels, finished by the second kernel) and strongly (gathered
    whole by it), beside an upsampled one."""
    for shapes, size in (([(25, 19), (26, 20), (13, 10)], (25, 19)), ([(12, 10), (60, 50), (6, 5)], (12, 10))):
        xs, scales, shifts = make_case(shapes, c=16, dtype=dtype, channels_last=channels_last)
        grad = torch.randn(2, 16, *size, device=DEV).to(dtype)
        y, grads = run("cuda", xs, scales, shifts, size, "bilinear", ac, True, grad)
        ry, rgrads = reference64(xs, scales, shifts, size, "bilinear", ac, True, grad, (y > 0).double())
        assert rel_err(y, ry) < TOL[dtype]
        for i, (a, b) in enumerate(zip(grads, rgrads)):
            assert rel_err(a, b) < 2 * TOL[dtype], f"{shapes}: grad {i}"


def cuda_kernels(fn):
    """Names of the kernels one call of fn launches (after a warm-up call)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]


@pytest.mark.parametrize("channels_last", [False, True])
def test_launches_per_call(channels_last):
    """Forward: one kernel, nothing else (no affine rows built, no copies),
    with or without affines. Backward: two kernels for nearest with exact
    factors, three for bilinear."""
    shapes, size = [(64, 48), (32, 24), (16, 12), (8, 6)], (64, 48)
    xs, scales, shifts = make_case(shapes, c=48, dtype=torch.bfloat16, channels_last=channels_last)
    op, bwd = torch.ops.hrnet_fast.exchange, torch.ops.hrnet_fast.exchange_backward
    some = ([None, scales[1], None, scales[3]], [shifts[0], None, None, shifts[3]])
    for mode, (sc, sh) in itertools.product(("nearest", "bilinear"), (([], []), some, (scales, shifts))):
        names = cuda_kernels(lambda: op(xs, sc, sh, list(size), mode, False, True))
        assert len(names) == 1 and "forward_" in names[0], (mode, names)
    for mode, want in (("nearest", 2), ("bilinear", 3)):
        out = op(xs, scales, shifts, list(size), mode, False, True)
        grad = torch.randn_like(out)
        names = cuda_kernels(lambda: bwd(grad, out, xs, *hrnet_fast.contract.saved_layout(xs), scales, mode, False,
                                         True))
        assert len(names) == want and all("backward_" in n for n in names), (mode, names)


def test_nan_propagates():
    """NaN stays NaN through the ReLU (torch.relu), and its gradient passes
    where the output is NaN (threshold_backward's out <= 0 mask)."""
    for channels_last in (False, True):
        xs, scales, shifts = make_case([(16, 16), (8, 8)], c=8, channels_last=channels_last)
        xs[0][0, 3, 5, 7] = float("nan")
        xs[1][1, 2, 1, 1] = float("nan")
        for mode in ("nearest", "bilinear"):
            grad = torch.randn(2, 8, 16, 16, device=DEV)
            y, grads = run("cuda", xs, scales, shifts, (16, 16), mode, False, True, grad)
            ry = hrnet_fast.reference(xs, scales, shifts, size=(16, 16), mode=mode)
            assert torch.equal(y.isnan(), ry.isnan())
            assert torch.allclose(y.nan_to_num(), ry.nan_to_num(), rtol=1e-5, atol=1e-5)
            assert grads[0][0, 3, 5, 7] == scales[0][3] * grad[0, 3, 5, 7]


@pytest.mark.parametrize("mode,ac", MODES)
@pytest.mark.parametrize("relu", [False, True])
def test_float64_and_no_relu(mode, ac, relu):
    shapes, size = SHAPES[1]
    xs, scales, shifts = make_case(shapes, c=5, dtype=torch.float64)
    grad = torch.randn(2, 5, *size, device=DEV, dtype=torch.float64)
    y, grads = run("cuda", xs, scales, shifts, size, mode, ac, relu, grad)
    ry, rgrads = reference64(xs, scales, shifts, size, mode, ac, relu, grad)
    assert rel_err(y, ry) < 1e-12
    for a, b in zip(grads, rgrads):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("mode,ac", MODES)
def test_gradcheck_float64(mode, ac):
    shapes, size = [(7, 5), (4, 3), (1, 2)], (7, 5)
    xs, scales, shifts = make_case(shapes, n=1, c=3, dtype=torch.float64)
    args = leaf(xs) + leaf(scales) + leaf(shifts)

    def f(*a):
        return hrnet_fast.exchange(list(a[:3]), list(a[3:6]), list(a[6:]), size=size, mode=mode, align_corners=ac,
                                   backend="cuda")

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


def test_matches_cpu_backend():
    shapes, size = SHAPES[1]
    for mode, ac in MODES:
        xs, scales, shifts = make_case(shapes)
        grad = torch.randn(2, 24, *size, device=DEV)
        y, grads = run("cuda", xs, scales, shifts, size, mode, ac, True, grad)
        cpu = lambda ts: [t.cpu() for t in ts]  # noqa: E731
        yc, gc = run("cpu", cpu(xs), cpu(scales), cpu(shifts), size, mode, ac, True, grad.cpu())
        assert rel_err(y.cpu(), yc) < 1e-6
        for a, b in zip(grads, gc):
            assert rel_err(a.cpu(), b) < 1e-5


@pytest.mark.skipif(not hrnet_fast.backends()["triton"], reason="triton unavailable")
@pytest.mark.parametrize("mode,ac", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_triton(mode, ac, dtype, channels_last):
    shapes, size = [(64, 48), (32, 24), (16, 12), (8, 6)], (64, 48)
    xs, scales, shifts = make_case(shapes, c=32, dtype=dtype, channels_last=channels_last)
    grad = torch.randn(2, 32, *size, device=DEV).to(dtype)
    y, grads = run("cuda", xs, scales, shifts, size, mode, ac, False, grad)
    yt, gt = run("triton", xs, scales, shifts, size, mode, ac, False, grad)
    assert rel_err(y, yt) < TOL[dtype]
    for a, b in zip(grads, gt):
        assert rel_err(a, b) < 2 * TOL[dtype]


@pytest.mark.parametrize("mode,ac", MODES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_deterministic(channels_last, dtype, mode, ac):
    """Bit-identical gradients across runs, with deterministic algorithms
    on (stock PyTorch raises there for bilinear's CUDA backward); odd sizes
    so bilinear has pixels straddling tiles."""
    shapes, size = [(97, 66), (49, 33), (25, 17), (13, 9)], (97, 66)
    xs, scales, shifts = make_case(shapes, n=4, c=48, dtype=dtype, channels_last=channels_last)
    grad = torch.randn(4, 48, *size, device=DEV).to(dtype)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        y1, g1 = run("cuda", xs, scales, shifts, size, mode, ac, True, grad)
        y2, g2 = run("cuda", xs, scales, shifts, size, mode, ac, True, grad)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(y1, y2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_graph_capture_and_replay(channels_last, mode):
    shapes, size = [(32, 24), (16, 12), (8, 6)], (32, 24)
    xs, scales, shifts = make_case(shapes, c=32, dtype=torch.bfloat16, channels_last=channels_last)
    grad = torch.randn(2, 32, *size, device=DEV).to(torch.bfloat16)
    static_x, static_s, static_b = leaf(xs), leaf(scales), leaf(shifts)
    static_g = grad.clone()

    def step():
        for t in static_x + static_s + static_b:
            t.grad = None
        y = hrnet_fast.exchange(static_x, static_s, static_b, size=size, mode=mode, backend="cuda")
        y.backward(static_g)
        return y

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm up outside the graph (allocator, lazy init)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = step()
        static_grads = [t.grad for t in static_x + static_s + static_b]

    new_xs, new_s, new_b = make_case(shapes, c=32, dtype=torch.bfloat16, channels_last=channels_last, seed=1)
    with torch.no_grad():
        for dst, src in zip(static_x + static_s + static_b, new_xs + new_s + new_b):
            dst.copy_(src)
    graph.replay()
    torch.cuda.synchronize()
    y, grads = run("cuda", new_xs, new_s, new_b, size, mode, False, True, grad)
    assert torch.equal(static_y, y)
    for a, b in zip(static_grads, grads):
        assert torch.equal(a, b)


def test_layouts_strides_and_empty():
    # mixed formats, a strided view and an expanded output gradient
    x0 = torch.randn(2, 8, 12, 10, device=DEV).contiguous(memory_format=torch.channels_last)
    x1 = torch.randn(2, 8, 12, 6, device=DEV)[:, :, ::2, ::2]
    x2 = torch.randn(2, 16, 3, 3, device=DEV)[:, ::2]
    grad = torch.randn(1, 8, 1, 10, device=DEV).expand(2, 8, 12, 10)
    scales, shifts = [torch.rand(8, device=DEV) + 0.5] * 3, [torch.randn(8, device=DEV)] * 3
    y, grads = run("cuda", [x0, x1, x2], scales, shifts, (12, 10), "bilinear", True, True, grad)
    assert y.is_contiguous(memory_format=torch.channels_last)
    ry, rgrads = reference64([x0, x1, x2], scales, shifts, (12, 10), "bilinear", True, True, grad)
    assert rel_err(y, ry) < 1e-5
    for a, b in zip(grads, rgrads):
        assert rel_err(a, b) < 1e-5
    # N = 0: empty output, empty and zero gradients
    e = [torch.randn(0, 4, 6, 5, device=DEV, requires_grad=True), torch.randn(0, 4, 3, 3, device=DEV)]
    ye = hrnet_fast.exchange(e, size=(6, 5), mode="bilinear", backend="cuda")
    assert ye.shape == (0, 4, 6, 5)
    ye.sum().backward()
    assert e[0].grad.shape == e[0].shape


def test_opcheck():
    shapes, size = [(9, 7), (5, 4)], (9, 7)
    for channels_last, (mode, ac) in itertools.product([False, True], MODES):
        xs, scales, shifts = make_case(shapes, c=8, channels_last=channels_last)
        sc = [scales[0].requires_grad_(), None]  # a given row and an absent one
        sh = [s.requires_grad_() for s in shifts]
        xs = leaf(xs)
        torch.library.opcheck(torch.ops.hrnet_fast.exchange.default, (xs, sc, sh, list(size), mode, ac, True))
        out = torch.ops.hrnet_fast.exchange(xs, sc, sh, list(size), mode, ac, True).detach()
        grad = torch.randn_like(out)
        # What autograd passes: the inputs that have a scale, every input's
        # (h, w) and layout; out only with a ReLU.
        sizes, cl = hrnet_fast.contract.saved_layout(xs)
        kept = [xs[0].detach(), None]
        torch.library.opcheck(torch.ops.hrnet_fast.exchange_backward.default,
                              (grad, out, kept, sizes, cl, [sc[0].detach(), None], mode, ac, True))
        torch.library.opcheck(torch.ops.hrnet_fast.exchange_backward.default,
                              (grad, None, kept, sizes, cl, [sc[0].detach(), None], mode, ac, False))


def test_past_2_31_elements():
    """Offsets past 2^31 elements; checked on the last channels, whose
    elements sit furthest into the tensors (the op is per channel)."""
    free, _ = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip("needs 40 GiB of free GPU memory")
    n, c, h, w = 2, 64, 4096, 4104  # 2.15e9 elements
    assert n * c * h * w > 2**31
    g = torch.Generator(device=DEV).manual_seed(0)
    for channels_last in (False, True):
        # Drawn on the GPU in their layout: make_case's CPU generator would
        # spend minutes on 2^31 values (and 8 GiB of host memory) per tensor.
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        xs = [torch.empty(n, c, hh, ww, device=DEV, dtype=torch.bfloat16, memory_format=fmt).normal_(generator=g)
              for hh, ww in ((h, w), (h // 2, w // 2))]
        scales = [torch.rand(c, device=DEV, generator=g) + 0.5 for _ in xs]
        shifts = [torch.randn(c, device=DEV, generator=g) * 0.5 for _ in xs]
        grad = torch.ones(n, c, h, w, device=DEV, dtype=torch.bfloat16)
        y, grads = run("cuda", xs, scales, shifts, (h, w), "bilinear", False, False, grad)
        tail = slice(c - 2, c)
        part = lambda ts: [t[-1:, tail].float() for t in ts]  # noqa: E731
        want = hrnet_fast.reference(part(xs), [s[tail] for s in scales], [s[tail] for s in shifts], size=(h, w),
                                    mode="bilinear", relu=False)
        assert rel_err(y[-1:, tail], want) < 1e-2
        gx1 = scales[1][tail].view(1, -1, 1, 1) * torch.nn.functional.interpolate(
            grad[-1:, tail].float(), size=(h // 2, w // 2), mode="area") * 4
        assert rel_err(grads[1][-1:, tail], gx1) < 2e-2
        del xs, grad, y, grads
        torch.cuda.empty_cache()


SANITIZER_SCRIPT = textwrap.dedent("""
    import sys
    import torch, hrnet_fast
    # (output size, input sizes): one tile with non-exact factors; several
    # tiles with exact factors (backward without straddling pixels); for
    # bilinear also straddling pixels with slight downsizing, and an input
    # gathered whole (strong downsizing).
    NEAREST = [((9, 7), [(9, 7), (5, 4), (1, 1)]), ((32, 48), [(32, 48), (16, 24), (8, 12), (4, 6)])]
    BILINEAR = NEAREST + [((33, 20), [(33, 20), (17, 10), (40, 24)]), ((12, 10), [(12, 10), (60, 50)])]
    small = sys.argv[1:] == ["small"]
    modes = [("bilinear", False)] if small else [("nearest", False), ("bilinear", False), ("bilinear", True)]
    dtypes = [(torch.bfloat16, 16)] if small else [(torch.float32, 8), (torch.bfloat16, 16), (torch.float16, 6)]
    for cl in (False, True):
        for mode, ac in modes:
            for dtype, c in dtypes:
                for i, (size, shapes) in enumerate(NEAREST if mode == "nearest" else BILINEAR):
                    xs = [torch.randn(2, c, h, w, device="cuda", dtype=dtype) for h, w in shapes]
                    if cl:
                        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
                    xs = [x.requires_grad_() for x in xs]
                    # Affines on every other case: the backward reads the
                    # inputs only for the scales' gradients.
                    scales = [torch.rand(c, device="cuda", requires_grad=True) for _ in xs] if i % 2 else None
                    shifts = [torch.randn(c, device="cuda", requires_grad=True) for _ in xs] if i % 2 else None
                    y = hrnet_fast.exchange(xs, scales, shifts, size=size, mode=mode, align_corners=ac,
                                            backend="cuda")
                    y.backward(torch.randn_like(y))
    torch.cuda.synchronize()
    print("ok")
""")


def run_sanitizer(tmp_path, tool, *args):
    script = tmp_path / "small_case.py"
    script.write_text(SANITIZER_SCRIPT)
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    proc = subprocess.run(["compute-sanitizer", "--tool", tool, "--error-exitcode", "3", sys.executable,
                           str(script), *args], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not on PATH")
def test_compute_sanitizer_memcheck(tmp_path):
    run_sanitizer(tmp_path, "memcheck")


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not on PATH")
def test_compute_sanitizer_racecheck(tmp_path):
    """The backward's phases share memory between barriers: no hazards
    (bilinear bf16 only, to keep the instrumented run short)."""
    run_sanitizer(tmp_path, "racecheck", "small")
