"""Interpolation index math in Triton: a faithful port of kernels/interp.h.

The forward taps reproduce ATen's F.interpolate(size=...) (nearest: float32
scale with the exact shortcuts out == in and out == 2 * in; bilinear:
area_pixel_compute_source_index in float32, or float64 for float64 tensors),
and the adjoint range `readers` is a binary search on those same formulas,
so the forward and the backward can never disagree about who reads whom.

Scales are passed in from the host, computed there in float32 exactly as
ATen does: Triton's float32 `/` lowers to an approximate division on NVIDIA
GPUs, which could move a source coordinate across an integer. The float64
path divides in the kernel, where division is correctly rounded.

Coordinates are int32 (a spatial extent is far below 2^31); only the flat
memory offsets built from them need int64.
"""
import triton
import triton.language as tl


@triton.jit
def nearest_source(dst, n_in, n_out, nscale):
    """ATen's nearest_idx: dst, or dst >> 1 for an exact 2x, else
    min(floor(dst * nscale), n_in - 1) with nscale = float(in) / float(out)."""
    # dst * nscale >= 0, so truncation is floor (and needs no libdevice).
    src = (dst.to(tl.float32) * nscale).to(tl.int32)
    src = tl.minimum(src, n_in - 1)
    src = tl.where(n_out == 2 * n_in, dst >> 1, src)
    src = tl.where(n_out == n_in, dst, src)
    return src


@triton.jit
def linear_scale(n_in, n_out, bscale, ALIGN: tl.constexpr, F64: tl.constexpr):
    """Source units per output unit: the host's float32 value, or for float64
    the same quotient computed here in float64."""
    if F64:
        # Multiplying by a float64 one converts exactly and, unlike .to(),
        # also works when Triton has specialized a size of 1 to a constexpr.
        one = tl.full([], 1.0, tl.float64)
        if ALIGN:
            den = (n_out - 1) * one
            s = tl.where(den > 0, ((n_in - 1) * one) / tl.where(den > 0, den, one), 0.0)
        else:
            s = (n_in * one) / (n_out * one)
    else:
        s = bscale
    return s


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
        real = scale * (d + 0.5) - 0.5
        real = tl.maximum(real, 0.0)
    # real >= 0 here, so truncation is floor.
    i0 = tl.minimum(real.to(tl.int32), n_in - 1)
    l1 = real - i0.to(real.dtype)
    l1 = tl.minimum(tl.maximum(l1, 0.0), 1.0)
    i1 = tl.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, l1


@triton.jit
def tap(dst, n_in, n_out, nscale, scale, BILINEAR: tl.constexpr, ALIGN: tl.constexpr, F64: tl.constexpr):
    """(i0, i1, lambda1) for either mode; nearest has i1 == i0, lambda1 == 0."""
    if BILINEAR:
        i0, i1, l1 = linear_tap(dst, n_in, scale, ALIGN, F64)
    else:
        i0 = nearest_source(dst, n_in, n_out, nscale)
        i1 = i0
        if F64:
            l1 = tl.zeros(dst.shape, tl.float64)
        else:
            l1 = tl.zeros(dst.shape, tl.float32)
    return i0, i1, l1


@triton.jit
def tap_weight(dst, q, n_in, n_out, nscale, scale, BILINEAR: tl.constexpr, ALIGN: tl.constexpr,
               F64: tl.constexpr):
    """Weight with which output coordinate dst reads source coordinate q
    (interp.h's weight())."""
    i0, i1, l1 = tap(dst, n_in, n_out, nscale, scale, BILINEAR, ALIGN, F64)
    w = tl.where(i0 == q, 1.0 - l1, 0.0)
    w += tl.where(i1 == q, l1, 0.0)
    return w


@triton.jit
def readers(q, n_in, n_out, nscale, scale, n_iter, BILINEAR: tl.constexpr, ALIGN: tl.constexpr,
            F64: tl.constexpr):
    """[begin, end): the output coordinates that read source q. i0 and i1 are
    non-decreasing in dst, so each bound is a binary search; n_iter >=
    ceil(log2(n_out + 1)) iterations settle every lane."""
    lo = tl.zeros(q.shape, tl.int32)
    hi = tl.zeros(q.shape, tl.int32) + n_out
    # begin: first dst with i1(dst) >= q.
    for _ in range(0, n_iter):
        mid = (lo + hi) >> 1
        _i0, i1, _l1 = tap(mid, n_in, n_out, nscale, scale, BILINEAR, ALIGN, F64)
        active = lo < hi
        left = i1 >= q
        hi = tl.where(active & left, mid, hi)
        lo = tl.where(active & (~left), mid + 1, lo)
    begin = lo
    hi = tl.zeros(q.shape, tl.int32) + n_out
    # end: first dst with i0(dst) > q.
    for _ in range(0, n_iter):
        mid = (lo + hi) >> 1
        i0, _i1, _l1 = tap(mid, n_in, n_out, nscale, scale, BILINEAR, ALIGN, F64)
        active = lo < hi
        right = i0 > q
        hi = tl.where(active & right, mid, hi)
        lo = tl.where(active & (~right), mid + 1, lo)
    return begin, lo
