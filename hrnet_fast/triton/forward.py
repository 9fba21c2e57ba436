"""Forward kernel: one pass over the output.

Each program owns BLOCK_P output pixels x BLOCK_C channels of one image. It
reads every same-size input once, gathers the 1 (nearest) or 4 (bilinear)
source pixels of every smaller input, applies the per-channel affine, sums
in float32 (float64 for float64 tensors), applies ReLU and stores once.

Tensors are addressed through their strides, so NCHW, channels_last and
arbitrary views need no copies; Triton specializes the unit channel stride
of channels_last, which gives the contiguous channel vectors of the fast
path. A launch takes up to MAX_SLOTS inputs; more are chained through an
accumulator in the accumulation dtype (see launch_forward).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import config
from .index import linear_scale, linear_tap, nearest_source

MAX_SLOTS = 4
DIRECT, NEAREST, BILINEAR, UNUSED = 0, 1, 2, -1


@triton.jit
def _offset(v, stride, I64: tl.constexpr):
    """v * stride, in int64 when I64 (one return: Triton types every
    return statement of a function alike, even in a dead constexpr branch)."""
    if I64:
        r = v.to(tl.int64) * stride
    else:
        r = v * stride
    return r


@triton.jit
def _tile(count, width, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile: image n, BLOCK_P pixels of a count-pixel plane of
    the given width (flat index, row, column) x BLOCK_C channels, with masks.
    Grid: (pixel blocks, channel blocks, images)."""
    n = tl.program_id(2)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = p < count
    cmask = c < C
    mask = pmask[:, None] & cmask[None, :]
    return n, p, p // width, p % width, c, pmask, cmask, mask


@triton.jit
def _term(x_ptr, sN, sC, sH, sW, h, w, H, W, nsh, nsw, bsh, bsw, n, c, p, oh, ow, mask,
          KIND: tl.constexpr, FLAT: tl.constexpr, ALIGN: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr):
    """interp(x)[n, c, oh, ow] for one input, as a [BLOCK_P, BLOCK_C] tile in
    the accumulation dtype. FLAT: a same-size input whose rows follow each
    other (sH == W * sW), so the pixel offset is p * sW, which the compiler
    can see is contiguous (it cannot see through p // W and p % W)."""
    if F64:
        acc_ty = tl.float64
    else:
        acc_ty = tl.float32
    base = x_ptr + _offset(n, sN, I64)
    coff = _offset(c, sC, I64)[None, :]
    if KIND == 0:
        if FLAT:
            rows = _offset(p, sW, I64)
        else:
            rows = _offset(oh, sH, I64) + _offset(ow, sW, I64)
        v = tl.load(base + coff + rows[:, None], mask=mask, other=0.0).to(acc_ty)
    elif KIND == 1:
        ih = nearest_source(oh, h, H, nsh)
        iw = nearest_source(ow, w, W, nsw)
        rows = _offset(ih, sH, I64) + _offset(iw, sW, I64)
        v = tl.load(base + coff + rows[:, None], mask=mask, other=0.0).to(acc_ty)
    else:
        sh = linear_scale(h, H, bsh, ALIGN, F64)
        sw = linear_scale(w, W, bsw, ALIGN, F64)
        h0, h1, lh = linear_tap(oh, h, sh, ALIGN, F64)
        w0, w1, lw = linear_tap(ow, w, sw, ALIGN, F64)
        r0 = _offset(h0, sH, I64)
        r1 = _offset(h1, sH, I64)
        c0 = _offset(w0, sW, I64)
        c1 = _offset(w1, sW, I64)
        x00 = tl.load(base + coff + (r0 + c0)[:, None], mask=mask, other=0.0).to(acc_ty)
        x01 = tl.load(base + coff + (r0 + c1)[:, None], mask=mask, other=0.0).to(acc_ty)
        x10 = tl.load(base + coff + (r1 + c0)[:, None], mask=mask, other=0.0).to(acc_ty)
        x11 = tl.load(base + coff + (r1 + c1)[:, None], mask=mask, other=0.0).to(acc_ty)
        lh = lh[:, None].to(acc_ty)
        lw = lw[:, None].to(acc_ty)
        # ATen's order: h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11).
        v = (1.0 - lh) * ((1.0 - lw) * x00 + lw * x01) + lh * ((1.0 - lw) * x10 + lw * x11)
    return v


@triton.jit
def _affine_term(acc, sc_ptr, sh_ptr, j: tl.constexpr, C, c, cmask,
                 x_ptr, sN, sC, sH, sW, h, w, H, W, nsh, nsw, bsh, bsw, n, p, oh, ow, mask,
                 KIND: tl.constexpr, FLAT: tl.constexpr, ALIGN: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr):
    """acc + scale_j * interp(x_j) + shift_j (interpolation weights sum to
    one, so the affine commutes with it)."""
    if KIND >= 0:
        v = _term(x_ptr, sN, sC, sH, sW, h, w, H, W, nsh, nsw, bsh, bsw, n, c, p, oh, ow, mask,
                  KIND, FLAT, ALIGN, F64, I64)
        s = tl.load(sc_ptr + j * C + c, mask=cmask, other=0.0).to(acc.dtype)
        b = tl.load(sh_ptr + j * C + c, mask=cmask, other=0.0).to(acc.dtype)
        acc += v * s[None, :] + b[None, :]
    return acc


@config.maybe_autotune(config.FORWARD_CONFIGS, key=["C", "HW", "CL"])
@triton.jit
def exchange_fwd_kernel(
    y_ptr, acc_in_ptr, acc_out_ptr, sc_ptr, sh_ptr,
    x0_ptr, x0_sN, x0_sC, x0_sH, x0_sW, x0_h, x0_w, x0_nsh, x0_nsw, x0_bsh, x0_bsw,
    x1_ptr, x1_sN, x1_sC, x1_sH, x1_sW, x1_h, x1_w, x1_nsh, x1_nsw, x1_bsh, x1_bsw,
    x2_ptr, x2_sN, x2_sC, x2_sH, x2_sW, x2_h, x2_w, x2_nsh, x2_nsw, x2_bsh, x2_bsw,
    x3_ptr, x3_sN, x3_sC, x3_sH, x3_sW, x3_h, x3_w, x3_nsh, x3_nsw, x3_bsh, x3_bsw,
    C, H, W, HW, CL, syN, syC, syH, syW,
    KIND0: tl.constexpr, KIND1: tl.constexpr, KIND2: tl.constexpr, KIND3: tl.constexpr,
    FLAT0: tl.constexpr, FLAT1: tl.constexpr, FLAT2: tl.constexpr, FLAT3: tl.constexpr, FLAT_Y: tl.constexpr,
    ALIGN: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr, RELU: tl.constexpr,
    HAS_ACC: tl.constexpr, STORE_ACC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y = act(acc_in + sum_j scale_j * interp(x_j) + shift_j) over one tile.
    HAS_ACC reads a partial sum (same strides as y) to add to; STORE_ACC
    writes the un-activated sum to acc_out instead of y (for chaining). The
    two are distinct buffers, so every launch is idempotent, as the
    autotuner's repeated benchmark runs require."""
    n, p, oh, ow, c, pmask, cmask, mask = _tile(HW, W, C, BLOCK_P, BLOCK_C)
    if F64:
        acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float64)
    else:
        acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    if FLAT_Y:
        ypix = _offset(p, syW, I64)
    else:
        ypix = _offset(oh, syH, I64) + _offset(ow, syW, I64)
    yoff = _offset(n, syN, I64) + _offset(c, syC, I64)[None, :] + ypix[:, None]
    if HAS_ACC:
        acc += tl.load(acc_in_ptr + yoff, mask=mask, other=0.0).to(acc.dtype)
    acc = _affine_term(acc, sc_ptr, sh_ptr, 0, C, c, cmask,
                       x0_ptr, x0_sN, x0_sC, x0_sH, x0_sW, x0_h, x0_w, H, W, x0_nsh, x0_nsw, x0_bsh, x0_bsw,
                       n, p, oh, ow, mask, KIND0, FLAT0, ALIGN, F64, I64)
    acc = _affine_term(acc, sc_ptr, sh_ptr, 1, C, c, cmask,
                       x1_ptr, x1_sN, x1_sC, x1_sH, x1_sW, x1_h, x1_w, H, W, x1_nsh, x1_nsw, x1_bsh, x1_bsw,
                       n, p, oh, ow, mask, KIND1, FLAT1, ALIGN, F64, I64)
    acc = _affine_term(acc, sc_ptr, sh_ptr, 2, C, c, cmask,
                       x2_ptr, x2_sN, x2_sC, x2_sH, x2_sW, x2_h, x2_w, H, W, x2_nsh, x2_nsw, x2_bsh, x2_bsw,
                       n, p, oh, ow, mask, KIND2, FLAT2, ALIGN, F64, I64)
    acc = _affine_term(acc, sc_ptr, sh_ptr, 3, C, c, cmask,
                       x3_ptr, x3_sN, x3_sC, x3_sH, x3_sW, x3_h, x3_w, H, W, x3_nsh, x3_nsw, x3_bsh, x3_bsw,
                       n, p, oh, ow, mask, KIND3, FLAT3, ALIGN, F64, I64)
    if STORE_ACC:
        tl.store(acc_out_ptr + yoff, acc.to(acc_out_ptr.dtype.element_ty), mask=mask)
    else:
        if RELU:
            acc = tl.where(acc < 0.0, 0.0, acc)  # torch.relu: NaN stays NaN
        tl.store(y_ptr + yoff, acc.to(y_ptr.dtype.element_ty), mask=mask)


def input_kind(x: Tensor, size: Sequence[int], mode: str) -> int:
    """How an input reaches the output grid: read directly, or interpolated."""
    if tuple(x.shape[-2:]) == (size[0], size[1]):
        return DIRECT
    return NEAREST if mode == "nearest" else BILINEAR


def is_flat(x: Tensor, size: Sequence[int]) -> bool:
    """A tensor of the output size whose pixel (h, w) sits at (h * W + w) * sW:
    its pixels can be addressed by the flat pixel index."""
    return (tuple(x.shape[-2:]) == (size[0], size[1])
            and (x.shape[2] == 1 or x.stride(2) == size[1] * x.stride(3)))


def _slot_args(x: Tensor, size: Sequence[int], align_corners: bool) -> list:
    nsh, bsh = config.axis_scales(x.shape[2], size[0], align_corners)
    nsw, bsw = config.axis_scales(x.shape[3], size[1], align_corners)
    return [x, *x.stride(), x.shape[2], x.shape[3], nsh, nsw, bsh, bsw]


def launch_forward(out: Tensor, inputs: List[Tensor], scales: Tensor, shifts: Tensor, mode: str,
                   align_corners: bool, relu: bool) -> None:
    """Fill `out` (already allocated, any strides) with the exchange of
    `inputs`. Chains launches of MAX_SLOTS inputs through a partial sum in
    the accumulation dtype when there are more inputs than slots."""
    n_img, channels, height, width = out.shape
    if out.numel() == 0:
        return
    size = (height, width)
    f64 = out.dtype == torch.float64
    chunks = [list(range(k, min(k + MAX_SLOTS, len(inputs)))) for k in range(0, len(inputs), MAX_SLOTS)]
    # Partial sums ping-pong between two buffers (a launch never reads what it writes).
    acc_dtype = torch.float64 if f64 else torch.float32
    bufs = [torch.empty_like(out, dtype=acc_dtype) for _ in range(min(len(chunks) - 1, 2))]
    i64 = config.needs_int64([out, *inputs, *bufs])
    cl = int(out.stride(1) == 1 and channels > 1)
    meta = config.fixed_meta()
    kernel = wrap_triton(exchange_fwd_kernel)
    for ci, chunk in enumerate(chunks):
        first, last = ci == 0, ci == len(chunks) - 1
        slots, kinds, flats = [], [], []
        for j in range(MAX_SLOTS):
            if j < len(chunk):
                x = inputs[chunk[j]]
                slots += _slot_args(x, size, align_corners)
                kinds.append(input_kind(x, size, mode))
                flats.append(is_flat(x, size))
            else:  # unused slot: any valid pointer, never read
                slots += _slot_args(inputs[chunk[0]], size, align_corners)
                kinds.append(UNUSED)
                flats.append(False)
        sc = scales[chunk[0]:chunk[-1] + 1]
        sh = shifts[chunk[0]:chunk[-1] + 1]
        grid = lambda m: (triton.cdiv(height * width, m["BLOCK_P"]), triton.cdiv(channels, m["BLOCK_C"]),
                          n_img)
        kernel[grid](
            out, bufs[(ci - 1) % 2] if not first else out, bufs[ci % 2] if not last else out, sc, sh, *slots,
            channels, height, width, height * width, cl, *out.stride(),
            KIND0=kinds[0], KIND1=kinds[1], KIND2=kinds[2], KIND3=kinds[3],
            FLAT0=flats[0], FLAT1=flats[1], FLAT2=flats[2], FLAT3=flats[3], FLAT_Y=is_flat(out, size),
            ALIGN=bool(align_corners and mode == "bilinear"), F64=f64, I64=i64, RELU=bool(relu),
            HAS_ACC=not first, STORE_ACC=not last, **meta,
        )
