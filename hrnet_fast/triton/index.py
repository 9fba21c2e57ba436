"""Interpolation index math in Triton: a faithful port of kernels/interp.h.

The forward taps reproduce ATen's F.interpolate(size=...) (nearest: float32
scale with the exact shortcuts out == in and out == 2 * in, or on CPU
tensors in float64 the CPU's float64 formula where ATen uses it, NEAR64;
bilinear: area_pixel_compute_source_index in float32, or float64 for
float64 tensors),
and the adjoint range `readers` is a binary search on those same formulas,
so the forward and the backward can never disagree about who reads whom.

Scales arrive from the host (slots.axis_scale), computed there exactly as
ATen does: no kernel divides. Triton's float32 `/` lowers to an approximate
division on NVIDIA GPUs, which could move a source coordinate across an
integer, and a correctly rounded division (div.rn) carries a slow-path
subroutine call, around which ptxas saves the caller's live registers to
the stack: spills, wherever the compiler sinks the division to.

Sizes may arrive as constexpr 1 (Triton specializes integer arguments equal
to one), which has no `.to()`: they are converted by multiplying with a
typed one. Coordinates are int32 (a spatial extent is far below 2^31); only
the flat memory offsets built from them may need int64.
"""
import triton
import triton.language as tl


@triton.jit
def nearest_source(dst, n_in, n_out, scale, NEAR64: tl.constexpr):
    """ATen's nearest_idx: dst, or dst >> 1 for an exact 2x, else
    min(floor(real), n_in - 1) with real = dst * scale in float32, or with
    NEAR64 (ATen's CPU generic kernel for float64, kernels/interp.h) the
    float64 product rounded to float32."""
    if NEAR64:
        real = (dst.to(tl.float64) * scale).to(tl.float32)
    else:
        real = dst.to(tl.float32) * scale
    # real >= 0, so truncation is floor (and needs no libdevice).
    src = tl.minimum(real.to(tl.int32), n_in - 1)
    src = tl.where(n_out == 2 * n_in, dst >> 1, src)
    src = tl.where(n_out == n_in, dst, src)
    return src


@triton.jit
def linear_tap(dst, n_in, scale, ALIGN: tl.constexpr, F64: tl.constexpr):
    """ATen's area_pixel_compute_source_index + guard_index_and_lambda:
    returns (i0, i1, lambda1); the weights are (1 - lambda1, lambda1)."""
    if F64:
        d = dst.to(tl.float64)
    else:
        d = dst.to(tl.float32)
    if ALIGN:
        real = scale * d
    else:
        real = tl.maximum(scale * (d + 0.5) - 0.5, 0.0)
    # real >= 0 here, so truncation is floor.
    i0 = tl.minimum(real.to(tl.int32), n_in - 1)
    l1 = tl.minimum(tl.maximum(real - i0.to(real.dtype), 0.0), 1.0)
    i1 = tl.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, l1


@triton.jit
def tap(dst, n_in, n_out, scale, BILINEAR: tl.constexpr, NEAR64: tl.constexpr, ALIGN: tl.constexpr,
        F64: tl.constexpr):
    """(i0, i1, lambda1) for either mode (scale: axis_scale); nearest has
    i1 == i0, lambda1 == 0."""
    if BILINEAR:
        i0, i1, l1 = linear_tap(dst, n_in, scale, ALIGN, F64)
    else:
        i0 = nearest_source(dst, n_in, n_out, scale, NEAR64)
        i1 = i0
        if F64:
            l1 = tl.zeros(dst.shape, tl.float64)
        else:
            l1 = tl.zeros(dst.shape, tl.float32)
    return i0, i1, l1


@triton.jit
def tap_weight(dst, q, n_in, n_out, scale, BILINEAR: tl.constexpr, NEAR64: tl.constexpr, ALIGN: tl.constexpr,
               F64: tl.constexpr):
    """Weight with which output coordinate dst reads source coordinate q
    (interp.h's weight()); 0 when it does not read it."""
    i0, i1, l1 = tap(dst, n_in, n_out, scale, BILINEAR, NEAR64, ALIGN, F64)
    w = tl.where(i0 == q, 1.0 - l1, 0.0)
    w += tl.where(i1 == q, l1, 0.0)
    return w


@triton.jit
def bit_length(n):
    """Bits of a positive int32 below 2^24: its float32 exponent plus one
    (exact: such integers convert exactly)."""
    one = tl.full([], 1.0, tl.float32)
    return (((n * one).to(tl.int32, bitcast=True) >> 23) & 0xFF) - 126


@triton.jit
def readers(q, n_in, n_out, scale, BILINEAR: tl.constexpr, NEAR64: tl.constexpr, ALIGN: tl.constexpr,
            F64: tl.constexpr):
    """[begin, end): the output coordinates that read source q. i0 and i1 are
    non-decreasing in dst, so each bound is a binary search over [0, n_out];
    bit_length(n_out) halvings settle every lane (a uniform trip count: no
    reductions inside the loop)."""
    steps = bit_length(n_out)
    lo = tl.zeros(q.shape, tl.int32)
    hi = lo + n_out
    # begin: first dst with i1(dst) >= q.
    for _ in range(0, steps):
        mid = (lo + hi) >> 1
        _i0, i1, _l1 = tap(mid, n_in, n_out, scale, BILINEAR, NEAR64, ALIGN, F64)
        left = i1 >= q
        active = lo < hi
        hi = tl.where(active & left, mid, hi)
        lo = tl.where(active & (~left), mid + 1, lo)
    begin = lo
    hi = tl.zeros(q.shape, tl.int32) + n_out
    # end: first dst with i0(dst) > q (searched from begin: end >= begin).
    for _ in range(0, steps):
        mid = (lo + hi) >> 1
        i0, _i1, _l1 = tap(mid, n_in, n_out, scale, BILINEAR, NEAR64, ALIGN, F64)
        right = i0 > q
        active = lo < hi
        hi = tl.where(active & right, mid, hi)
        lo = tl.where(active & (~right), mid + 1, lo)
    return begin, lo
