"""Shared pieces of the Triton kernels: index widths, tensor offsets by
layout, and the gather of one input slot onto a tile of output pixels.

Offsets are computed from sizes and a layout bit (see slots.py):
    NCHW:           ((n * C + c) * h + ih) * w + iw
    channels_last:  ((n * h + ih) * w + iw) * C + c
with C a compile-time constant, so that Triton sees the channel (or pixel)
runs as contiguous and aligned and issues 16-byte accesses.
"""
import triton
import triton.language as tl

from .index import linear_tap, nearest_source


@triton.jit
def wide(v, I64: tl.constexpr):
    """v as the offset type: int64 when some tensor could overflow int32.
    Adding a typed zero also converts a size Triton specialized to constexpr 1."""
    if I64:
        r = v + tl.zeros([], tl.int64)
    else:
        r = v + tl.zeros([], tl.int32)
    return r


@triton.jit
def pixel_offset(n, pix, c, hw, C: tl.constexpr, CL: tl.constexpr):
    """[P, C] offsets of (image n, flat pixel pix, channel c) in a tensor of
    hw pixels per image: n is a scalar or a [P] vector, pix [P], c [C]."""
    if CL:
        off = ((n * hw + pix) * C)[:, None] + c[None, :]
    else:
        off = (n * (C * hw) + pix)[:, None] + (c * hw)[None, :]
    return off


@triton.jit
def source_offset(n, ih, iw, c, h, w, C: tl.constexpr, CL: tl.constexpr):
    """[P, C] offsets of (n, c, ih, iw) in an (N, C, h, w) tensor."""
    if CL:
        off = (((n * h + ih) * w + iw) * C)[:, None] + c[None, :]
    else:
        off = (n * (C * h * w) + ih * w + iw)[:, None] + (c * (h * w))[None, :]
    return off


@triton.jit
def scale_value(s, D: tl.constexpr, F64: tl.constexpr):
    """A slot's scale argument as tap() takes it (slots.axis_scale): a
    float32 value, or for float64 bilinear and NEAR64 nearest the bits of a
    float64."""
    if (((D & 3) == 3) and F64) or ((D >> 9) & 1):
        v = s.to(tl.int64).to(tl.float64, bitcast=True)
    else:
        v = s
    return v


@triton.jit
def gather_slot(x_ptr, h, w, sh, sw, n, pix, oh, ow, c, mask, H, W, C: tl.constexpr, D: tl.constexpr,
                ALIGN: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr):
    """interp(x)[n, c, oh, ow] for one input slot over a [P, C] tile, in the
    accumulation type (see slots.py for the descriptor D; sh, sw the row
    and column scales, slots.axis_scale)."""
    KIND: tl.constexpr = D & 3
    XCL: tl.constexpr = (D >> 2) & 1
    if F64:
        acc_ty = tl.float64
    else:
        acc_ty = tl.float32
    if KIND == 1:
        off = pixel_offset(n, pix, c, wide(H, I64) * W, C, XCL)
        v = tl.load(x_ptr + off, mask=mask, other=0.0).to(acc_ty)
    elif KIND == 2:
        NEAR64: tl.constexpr = (D >> 9) & 1
        ih = nearest_source(oh, h, H, scale_value(sh, D, F64), NEAR64)
        iw = nearest_source(ow, w, W, scale_value(sw, D, F64), NEAR64)
        off = source_offset(n, wide(ih, I64), iw, c, h, w, C, XCL)
        v = tl.load(x_ptr + off, mask=mask, other=0.0).to(acc_ty)
    else:
        h0, h1, lh = linear_tap(oh, h, scale_value(sh, D, F64), ALIGN, F64)
        w0, w1, lw = linear_tap(ow, w, scale_value(sw, D, F64), ALIGN, F64)
        h0 = wide(h0, I64)
        h1 = wide(h1, I64)
        x00 = tl.load(x_ptr + source_offset(n, h0, w0, c, h, w, C, XCL), mask=mask, other=0.0).to(acc_ty)
        x01 = tl.load(x_ptr + source_offset(n, h0, w1, c, h, w, C, XCL), mask=mask, other=0.0).to(acc_ty)
        x10 = tl.load(x_ptr + source_offset(n, h1, w0, c, h, w, C, XCL), mask=mask, other=0.0).to(acc_ty)
        x11 = tl.load(x_ptr + source_offset(n, h1, w1, c, h, w, C, XCL), mask=mask, other=0.0).to(acc_ty)
        lh = lh[:, None].to(acc_ty)
        lw = lw[:, None].to(acc_ty)
        # ATen's order: h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11).
        v = (1.0 - lh) * ((1.0 - lw) * x00 + lw * x01) + lh * ((1.0 - lw) * x10 + lw * x11)
    return v


@triton.jit
def affine(acc, v, s_ptr, b_ptr, c, cmask, D: tl.constexpr):
    """acc + v * scale + shift, with absent rows (descriptor bits) the
    identity: nothing is loaded for them. Interpolation weights sum to one,
    so the affine commutes with it and is applied after."""
    HAS_S: tl.constexpr = (D >> 3) & 1
    HAS_B: tl.constexpr = (D >> 4) & 1
    if HAS_S:
        v = v * tl.load(s_ptr + c, mask=cmask, other=0.0).to(acc.dtype)[None, :]
    if HAS_B:
        v = v + tl.load(b_ptr + c, mask=cmask, other=0.0).to(acc.dtype)[None, :]
    return acc + v
