"""Backward kernels: the adjoint of the exchange, deterministic, three launches.

With gm = grad where out > 0 or out is NaN (torch.relu's backward), or grad:
    G_k = adjoint_interp_k(gm)            (identity for same-size inputs)
    grad_x_k = scale_k * G_k
    grad_scale_k[c] = sum_{n, q} G_k * x_k
    grad_shift[c]  = sum_{n, p} gm        (the same for every shift and bias)

Interpolation is separable, so each adjoint is a W pass then an H pass:
    T_k[n, c, oh, iw] = sum_ow  A_w[ow, iw] gm[n, c, oh, ow]
    G_k[n, c, ih, iw] = sum_oh  A_h[oh, ih] T_k[n, c, oh, iw]
each sum a gather over the contiguous range of readers (index.readers), so
every output element has one writer and nothing needs atomics.

1. rows: row bands of the output, walked in column blocks. Each band has
   one program per role, with adjacent ids so that they run together and
   share the band in cache: the main role reads grad and out once, writes
   gm when asked (the conv terms' backward reads it), the gradient of every
   same-size input and the band's partial sums of gm and of gm * x_k; role
   k writes T_k for the band, each column block the source columns it owns
   (their readers lie in and next to the block). Roles apart, no running
   sum is live across the W pass's loops (ptxas spilled such sums).
2. cols: row bands of each interpolated input, all inputs in one launch:
   the H pass over T_k, its gradient, per-band partial sums of G_k * x_k.
3. reduce: each partial-sum segment summed over its rows in a fixed order.

T_k is float32 (float64 for float64 tensors): an (N, C, H, w_k) buffer per
interpolated input, in the gradient's layout. Partial sums live in one
(1 + MAX_SLOTS, RS, C) buffer: segment 0 for the shift, segment 1 + k for
slot k's scale; each program writes its own row, and the reduction reads
exactly the rows written, so nothing is zeroed. More than MAX_SLOTS inputs
take these three launches per chunk of MAX_SLOTS.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ..contract import affine_dtype
from . import slots, tuning
from .forward import MAX_SLOTS
from .index import readers, tap, tap_weight
from .tiles import pixel_offset, scale_value, source_offset, wide


@triton.jit
def _masked_grad(grad_ptr, out_ptr, off, mask, RELU: tl.constexpr, F64: tl.constexpr):
    if F64:
        g = tl.load(grad_ptr + off, mask=mask, other=0.0).to(tl.float64)
    else:
        g = tl.load(grad_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        o = tl.load(out_ptr + off, mask=mask, other=0.0)
        g = tl.where(o <= 0, 0.0, g)  # threshold_backward: a NaN output passes its gradient
    return g


@triton.jit
def _w_pass(t_ptr, grad_ptr, out_ptr, w, sw, n, oh0, ow0, c, cmask, H, W, C: tl.constexpr, D: tl.constexpr,
            CL: tl.constexpr, ALIGN: tl.constexpr, RELU: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr,
            BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """T[n, c, oh, iw] for the band's rows and the source columns owned by
    the output columns [ow0, ow0 + BLOCK_W): those after the last column
    read by block's predecessor, up to the last read by the block (the
    first block starts at 0, the last ends at w). The blocks partition
    [0, w), whatever the sizes."""
    BIL: tl.constexpr = (D & 3) == 3
    NEAR64: tl.constexpr = (D >> 9) & 1
    CHUNK: tl.constexpr = 1 << ((D >> 5) & 15)
    sw = scale_value(sw, D, F64)
    _a, before, _b = tap(tl.maximum(ow0 - 1, 0), w, W, sw, BIL, NEAR64, ALIGN, F64)
    _c, last, _d = tap(tl.minimum(ow0 + BLOCK_W, W) - 1, w, W, sw, BIL, NEAR64, ALIGN, F64)
    lo = tl.where(ow0 == 0, 0, before + 1)
    hi = tl.where(ow0 + BLOCK_W >= W, w, last + 1)
    q = tl.arange(0, BLOCK_H * CHUNK)
    oh = oh0 + q // CHUNK
    for iw0 in range(lo, hi, CHUNK):
        iw = iw0 + q % CHUNK
        live = (oh < H) & (iw < hi)
        begin, end = readers(iw, w, W, sw, BIL, NEAR64, ALIGN, F64)
        count = tl.where(live, end - begin, 0)
        if F64:
            acc = tl.zeros([BLOCK_H * CHUNK, BLOCK_C], tl.float64)
        else:
            acc = tl.zeros([BLOCK_H * CHUNK, BLOCK_C], tl.float32)
        for j in range(0, tl.max(count, 0)):
            ow = begin + j
            on = j < count
            wt = tap_weight(ow, iw, w, W, sw, BIL, NEAR64, ALIGN, F64)
            off = pixel_offset(n, oh * W + ow, c, wide(H, I64) * W, C, CL)
            g = _masked_grad(grad_ptr, out_ptr, off, on[:, None] & cmask[None, :], RELU, F64)
            acc += wt.to(acc.dtype)[:, None] * g
        toff = source_offset(n, oh, iw, c, H, w, C, CL)
        tl.store(t_ptr + toff, acc, mask=live[:, None] & cmask[None, :])


@triton.jit
def _same_size(sums, gm, x_ptr, s_ptr, d_ptr, n, pix, c, cmask, mask, hw, C: tl.constexpr, D: tl.constexpr):
    """grad_x = scale * gm for a same-size slot, and (its scale given) the
    running tile of gm * x, reduced over pixels after the loop."""
    XCL: tl.constexpr = (D >> 2) & 1
    HAS_S: tl.constexpr = (D >> 3) & 1
    off = pixel_offset(n, pix, c, hw, C, XCL)
    if HAS_S:
        x = tl.load(x_ptr + off, mask=mask, other=0.0).to(gm.dtype)
        s = tl.load(s_ptr + c, mask=cmask, other=0.0).to(gm.dtype)
        tl.store(d_ptr + off, (gm * s[None, :]).to(d_ptr.dtype.element_ty), mask=mask)
        sums += gm * x
    else:
        tl.store(d_ptr + off, gm.to(d_ptr.dtype.element_ty), mask=mask)
    return sums


@triton.jit
def _main_band(grad_ptr, out_ptr, gm_ptr, psum_ptr, x0_ptr, s0_ptr, d0_ptr, x1_ptr, s1_ptr, d1_ptr,
               x2_ptr, s2_ptr, d2_ptr, x3_ptr, s3_ptr, d3_ptr, band, n, oh0, c, cmask, H, W, RS,
               C: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr,
               CL: tl.constexpr, RELU: tl.constexpr, SHIFT: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr,
               BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """The band's masked gradient (stored when gm_ptr is given), the
    same-size slots' gradients, and the band's partial sums of gm and of
    gm * x_k, each in its own row of its psum segment."""
    hw = wide(H, I64) * W
    q = tl.arange(0, BLOCK_H * BLOCK_W)
    oh = oh0 + q // BLOCK_W
    # Running [pixels, channels] tiles, reduced over pixels once after the
    # loop (a reduction per block would cost a barrier per block).
    if F64:
        zero = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], tl.float64)
    else:
        zero = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], tl.float32)
    sum_b, sum0, sum1, sum2, sum3 = zero, zero, zero, zero, zero
    for ow0 in range(0, W, BLOCK_W):
        ow = ow0 + q % BLOCK_W
        pmask = (oh < H) & (ow < W)
        mask = pmask[:, None] & cmask[None, :]
        pix = oh * W + ow
        off = pixel_offset(n, pix, c, hw, C, CL)
        gm = _masked_grad(grad_ptr, out_ptr, off, mask, RELU, F64)
        if SHIFT:
            sum_b += gm
        if gm_ptr is not None:
            tl.store(gm_ptr + off, gm.to(gm_ptr.dtype.element_ty), mask=mask)
        if (D0 & 3) == 1:
            sum0 = _same_size(sum0, gm, x0_ptr, s0_ptr, d0_ptr, n, pix, c, cmask, mask, hw, C, D0)
        if (D1 & 3) == 1:
            sum1 = _same_size(sum1, gm, x1_ptr, s1_ptr, d1_ptr, n, pix, c, cmask, mask, hw, C, D1)
        if (D2 & 3) == 1:
            sum2 = _same_size(sum2, gm, x2_ptr, s2_ptr, d2_ptr, n, pix, c, cmask, mask, hw, C, D2)
        if (D3 & 3) == 1:
            sum3 = _same_size(sum3, gm, x3_ptr, s3_ptr, d3_ptr, n, pix, c, cmask, mask, hw, C, D3)
    row = wide(band, I64) * C + c
    if SHIFT:
        tl.store(psum_ptr + row, tl.sum(sum_b, 0), mask=cmask)
    seg = wide(RS, I64) * C
    if (D0 & 3) == 1 and (D0 >> 3) & 1:
        tl.store(psum_ptr + seg + row, tl.sum(sum0, 0), mask=cmask)
    if (D1 & 3) == 1 and (D1 >> 3) & 1:
        tl.store(psum_ptr + 2 * seg + row, tl.sum(sum1, 0), mask=cmask)
    if (D2 & 3) == 1 and (D2 >> 3) & 1:
        tl.store(psum_ptr + 3 * seg + row, tl.sum(sum2, 0), mask=cmask)
    if (D3 & 3) == 1 and (D3 >> 3) & 1:
        tl.store(psum_ptr + 4 * seg + row, tl.sum(sum3, 0), mask=cmask)


@triton.jit
def _w_band(t_ptr, grad_ptr, out_ptr, w, sw, n, oh0, c, cmask, H, W, C: tl.constexpr, D: tl.constexpr,
            CL: tl.constexpr, ALIGN: tl.constexpr, RELU: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr,
            BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """The W pass of one interpolated slot over the band, block by block."""
    for ow0 in range(0, W, BLOCK_W):
        _w_pass(t_ptr, grad_ptr, out_ptr, w, sw, n, oh0, ow0, c, cmask, H, W, C, D, CL, ALIGN, RELU, F64, I64,
                BLOCK_H, BLOCK_W, BLOCK_C)


@triton.jit(do_not_specialize=["sw0", "sw1", "sw2", "sw3"])
def exchange_bwd_rows_kernel(
    grad_ptr, out_ptr, gm_ptr, psum_ptr,
    x0_ptr, s0_ptr, d0_ptr, w0, sw0,
    x1_ptr, s1_ptr, d1_ptr, w1, sw1,
    x2_ptr, s2_ptr, d2_ptr, w2, sw2,
    x3_ptr, s3_ptr, d3_ptr, w3, sw3,
    N, H, W, RS,
    C: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr,
    CL: tl.constexpr, ALIGN: tl.constexpr, RELU: tl.constexpr, SHIFT: tl.constexpr, I64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Bands of BLOCK_H output rows x BLOCK_C channels of one image. Each
    band has 1 + (interpolated slots) programs with adjacent ids, so they run
    together and share the band in cache: role 0 does the band's main pass,
    role r the W pass of the r-th interpolated slot (apart, no running sum
    is live across the W pass's loops). Slot k: same-size: x (when its
    scale is given), scale, grad_x (d); interpolated: T (d), source width
    and column scale."""
    F64: tl.constexpr = psum_ptr.dtype.element_ty == tl.float64
    NUM_CB: tl.constexpr = (C + BLOCK_C - 1) // BLOCK_C
    R1: tl.constexpr = 1 + ((D0 & 3) >= 2)
    R2: tl.constexpr = R1 + ((D1 & 3) >= 2)
    R3: tl.constexpr = R2 + ((D2 & 3) >= 2)
    ROLES: tl.constexpr = R3 + ((D3 & 3) >= 2)
    pid = tl.program_id(0)
    cb = pid % NUM_CB
    role = (pid // NUM_CB) % ROLES
    band = pid // (NUM_CB * ROLES)
    bands = tl.cdiv(H, BLOCK_H)
    n = wide(band // bands, I64)
    oh0 = (band % bands) * BLOCK_H
    c = wide(cb * BLOCK_C + tl.arange(0, BLOCK_C), I64)
    cmask = c < C
    if role == 0:
        _main_band(grad_ptr, out_ptr, gm_ptr, psum_ptr, x0_ptr, s0_ptr, d0_ptr, x1_ptr, s1_ptr, d1_ptr,
                   x2_ptr, s2_ptr, d2_ptr, x3_ptr, s3_ptr, d3_ptr, band, n, oh0, c, cmask, H, W, RS,
                   C, D0, D1, D2, D3, CL, RELU, SHIFT, F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)
    band = (grad_ptr, out_ptr, n, oh0, c, cmask, H, W)
    _w_role(role, 1, d0_ptr, w0, sw0, band, C, D0, CL, ALIGN, RELU, F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)
    _w_role(role, R1, d1_ptr, w1, sw1, band, C, D1, CL, ALIGN, RELU, F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)
    _w_role(role, R2, d2_ptr, w2, sw2, band, C, D2, CL, ALIGN, RELU, F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)
    _w_role(role, R3, d3_ptr, w3, sw3, band, C, D3, CL, ALIGN, RELU, F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)


@triton.jit
def _w_role(role, R, t_ptr, w, sw, band, C: tl.constexpr, D: tl.constexpr, CL: tl.constexpr, ALIGN: tl.constexpr,
            RELU: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
            BLOCK_C: tl.constexpr):
    """The W pass of an interpolated slot over the band, by the programs of
    its role R (nothing for a same-size or unused slot); band: (grad_ptr,
    out_ptr, n, oh0, c, cmask, H, W)."""
    if (D & 3) >= 2:
        if role == R:
            grad_ptr, out_ptr, n, oh0, c, cmask, H, W = band
            _w_band(t_ptr, grad_ptr, out_ptr, w, sw, n, oh0, c, cmask, H, W, C, D, CL, ALIGN, RELU, F64, I64,
                    BLOCK_H, BLOCK_W, BLOCK_C)


@triton.jit
def _h_pass(pid, psum_ptr, seg, x_ptr, s_ptr, t_ptr, d_ptr, h, w, sh, H, W, C: tl.constexpr, D: tl.constexpr,
            CL: tl.constexpr, ALIGN: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr, BLOCK_H: tl.constexpr,
            BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """One band of BLOCK_H source rows of slot k: G = H-adjoint of T,
    grad_x = scale * G, and the band's sum of G * x."""
    BIL: tl.constexpr = (D & 3) == 3
    NEAR64: tl.constexpr = (D >> 9) & 1
    sh = scale_value(sh, D, F64)
    XCL: tl.constexpr = (D >> 2) & 1
    HAS_S: tl.constexpr = (D >> 3) & 1
    NUM_CB: tl.constexpr = (C + BLOCK_C - 1) // BLOCK_C
    cb = pid % NUM_CB
    band = pid // NUM_CB
    bands = tl.cdiv(h, BLOCK_H)
    n = wide(band // bands, I64)
    c = wide(cb * BLOCK_C + tl.arange(0, BLOCK_C), I64)
    cmask = c < C
    q = tl.arange(0, BLOCK_H * BLOCK_W)
    ih = (band % bands) * BLOCK_H + q // BLOCK_W
    begin, end = readers(ih, h, H, sh, BIL, NEAR64, ALIGN, F64)
    count = tl.where(ih < h, end - begin, 0)
    steps = tl.max(count, 0)
    # Running tile of G * x, reduced over pixels after the loop.
    if F64:
        total = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], tl.float64)
    else:
        total = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], tl.float32)
    if HAS_S:
        s = tl.load(s_ptr + c, mask=cmask, other=0.0).to(total.dtype)
    for iw0 in range(0, w, BLOCK_W):
        iw = iw0 + q % BLOCK_W
        pmask = (ih < h) & (iw < w)
        mask = pmask[:, None] & cmask[None, :]
        if F64:
            g = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], tl.float64)
        else:
            g = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], tl.float32)
        for j in range(0, steps):
            oh = begin + j
            on = (j < count) & pmask
            wt = tap_weight(oh, ih, h, H, sh, BIL, NEAR64, ALIGN, F64)
            t = tl.load(t_ptr + source_offset(n, oh, iw, c, H, w, C, CL), mask=on[:, None] & cmask[None, :],
                        other=0.0)
            g += wt.to(g.dtype)[:, None] * t
        xoff = source_offset(n, ih, iw, c, h, w, C, XCL)
        if HAS_S:
            x = tl.load(x_ptr + xoff, mask=mask, other=0.0).to(g.dtype)
            tl.store(d_ptr + xoff, (g * s[None, :]).to(d_ptr.dtype.element_ty), mask=mask)
            total += g * x
        else:
            tl.store(d_ptr + xoff, g.to(d_ptr.dtype.element_ty), mask=mask)
    if HAS_S:
        tl.store(psum_ptr + seg + wide(band, I64) * C + c, tl.sum(total, 0), mask=cmask)


@triton.jit
def _bands(h, N, BLOCK_H: tl.constexpr, NUM_CB: tl.constexpr, D: tl.constexpr):
    """Programs the cols kernel gives a slot: every band of an interpolated
    input, none for a same-size or unused one."""
    if (D & 3) >= 2:
        r = N * tl.cdiv(h, BLOCK_H) * NUM_CB
    else:
        r = 0
    return r


@triton.jit(do_not_specialize=["sh0", "sh1", "sh2", "sh3"])
def exchange_bwd_cols_kernel(
    psum_ptr,
    x0_ptr, s0_ptr, t0_ptr, d0_ptr, h0, w0, sh0,
    x1_ptr, s1_ptr, t1_ptr, d1_ptr, h1, w1, sh1,
    x2_ptr, s2_ptr, t2_ptr, d2_ptr, h2, w2, sh2,
    x3_ptr, s3_ptr, t3_ptr, d3_ptr, h3, w3, sh3,
    N, H, W, RS,
    C: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr,
    CL: tl.constexpr, ALIGN: tl.constexpr, I64: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """The H pass of every interpolated slot in one launch: program ids are
    dealt to the slots in order, each slot's bands x channel blocks."""
    F64: tl.constexpr = psum_ptr.dtype.element_ty == tl.float64
    NUM_CB: tl.constexpr = (C + BLOCK_C - 1) // BLOCK_C
    pid = tl.program_id(0)
    seg = wide(RS, I64) * C
    e0 = _bands(h0, N, BLOCK_H, NUM_CB, D0)
    e1 = e0 + _bands(h1, N, BLOCK_H, NUM_CB, D1)
    e2 = e1 + _bands(h2, N, BLOCK_H, NUM_CB, D2)
    if (D0 & 3) >= 2:
        if pid < e0:
            _h_pass(pid, psum_ptr, seg, x0_ptr, s0_ptr, t0_ptr, d0_ptr, h0, w0, sh0, H, W, C, D0, CL, ALIGN, F64, I64,
                    BLOCK_H, BLOCK_W, BLOCK_C)
    if (D1 & 3) >= 2:
        if (pid >= e0) & (pid < e1):
            _h_pass(pid - e0, psum_ptr, 2 * seg, x1_ptr, s1_ptr, t1_ptr, d1_ptr, h1, w1, sh1, H, W, C, D1, CL, ALIGN,
                    F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)
    if (D2 & 3) >= 2:
        if (pid >= e1) & (pid < e2):
            _h_pass(pid - e1, psum_ptr, 3 * seg, x2_ptr, s2_ptr, t2_ptr, d2_ptr, h2, w2, sh2, H, W, C, D2, CL, ALIGN,
                    F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)
    if (D3 & 3) >= 2:
        if pid >= e2:
            _h_pass(pid - e2, psum_ptr, 4 * seg, x3_ptr, s3_ptr, t3_ptr, d3_ptr, h3, w3, sh3, H, W, C, D3, CL, ALIGN,
                    F64, I64, BLOCK_H, BLOCK_W, BLOCK_C)


@triton.jit
def exchange_bwd_reduce_kernel(
    psum_ptr, shift_ptr, scales_ptr, ROW0, RS, L0, L1, L2, L3, L4,
    C: tl.constexpr, GIVEN: tl.constexpr, SHIFT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Sum each partial-sum segment over its rows, in row order (the same
    order, hence the same bits, on every run). Segment 0 goes to the shift
    gradient, segment 1 + k to the next row of the scale gradients, from
    row ROW0 (GIVEN: bit k set when slot k's scale is given)."""
    NUM_CB: tl.constexpr = (C + BLOCK_C - 1) // BLOCK_C
    HS0: tl.constexpr = GIVEN & 1
    HS1: tl.constexpr = (GIVEN >> 1) & 1
    HS2: tl.constexpr = (GIVEN >> 2) & 1
    pid = tl.program_id(0)
    s = pid // NUM_CB
    c = (pid % NUM_CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    rows = tl.where(s == 0, L0, tl.where(s == 1, L1, tl.where(s == 2, L2, tl.where(s == 3, L3, L4))))
    base = psum_ptr + s.to(tl.int64) * RS * C
    acc = tl.zeros([BLOCK_C], psum_ptr.dtype.element_ty)
    r = tl.arange(0, BLOCK_R)
    for r0 in range(0, rows, BLOCK_R):
        m = ((r0 + r) < rows)[:, None] & cmask[None, :]
        acc += tl.sum(tl.load(base + (r0 + r).to(tl.int64)[:, None] * C + c[None, :], mask=m, other=0.0), 0)
    # Output row of segment s: the scales given before it.
    out_row = tl.where(s > 1, HS0, 0) + tl.where(s > 2, HS1, 0) + tl.where(s > 3, HS2, 0)
    if SHIFT:
        if s == 0:
            tl.store(shift_ptr + c, acc, mask=cmask)
    if scales_ptr is not None:
        if (s > 0) & (rows > 0):
            tl.store(scales_ptr + (ROW0 + out_row) * C + c, acc, mask=cmask)


def launch_backward(grad: Tensor, out: Optional[Tensor], inputs: List[Optional[Tensor]], shapes: List[Sequence[int]],
                    channels_last: List[bool], scales: List[Optional[Tensor]], mode: str, align_corners: bool,
                    relu: bool, want_gm: bool = False) -> Tuple[List[Tensor], Tensor, Tensor, Optional[Tensor]]:
    """Gradients of every input, of the given scales ((given, C), in their
    order), the (C,) gradient every shift and conv bias shares, in the
    accumulation dtype, and (want_gm) the masked output gradient.
    Inputs (standard layouts) are read only where their scale is given, and
    None elsewhere is fine; `shapes` and `channels_last` describe them all
    (their gradients take that layout). `grad` is in the output's layout;
    `out` is read only when relu."""
    n_img, channels, height, width = (int(v) for v in grad.shape)
    acc = affine_dtype(grad.dtype)
    given = [k for k, s in enumerate(scales) if s is not None]
    grad_scales = torch.empty((len(given), channels), dtype=acc, device=grad.device)
    grad_shift = torch.empty((channels,), dtype=acc, device=grad.device)
    grads = [torch.empty(tuple(shape), dtype=grad.dtype, device=grad.device,
                         memory_format=torch.channels_last if cl else torch.contiguous_format)
             for shape, cl in zip(shapes, channels_last)]
    gm = torch.empty_like(grad) if want_gm and relu else (grad if want_gm else None)
    if grad.numel() == 0:
        for g in grads:
            g.zero_()
        return grads, grad_scales.zero_(), grad_shift.zero_(), gm
    size = (height, width)
    cl = slots.is_cl(grad)
    shapes = [tuple(int(v) for v in shape) for shape in shapes]
    rows_cfg, cols_cfg, red_cfg = tuning.backward_configs(grad, shapes, size, mode)
    bh, bw, bc = rows_cfg["BLOCK_H"], rows_cfg["BLOCK_W"], rows_cfg["BLOCK_C"]
    ch, cw, cc = (cols_cfg["BLOCK_H"], cols_cfg["BLOCK_W"], cols_cfg["BLOCK_C"]) if cols_cfg else (1, 1, 1)
    align = bool(align_corners and mode == "bilinear")
    f64 = grad.dtype == torch.float64
    coarse = [k for k, shape in enumerate(shapes) if slots.kind(shape, size, mode) != slots.DIRECT]
    # An input's descriptor bits read its layout as the kernels address it:
    # its own when given (a standard layout), else its gradient's.
    layout = [slots.is_cl(x) if x is not None else slots.is_cl(g) for x, g in zip(inputs, grads)]
    near64 = [slots.nearest_uses_double(shape, c, grad.dtype, grad.device, size, mode)
              for shape, c in zip(shapes, channels_last)]
    # The W-pass intermediates T_k (N, C, H, w_k), in grad's layout (the
    # kernels only take their address and sizes).
    t_of = {k: torch.empty((n_img * channels * height * shapes[k][3],), dtype=acc, device=grad.device)
            for k in coarse}
    rows_bands = n_img * triton.cdiv(height, bh)
    cols_bands = [n_img * triton.cdiv(shapes[k][2], ch) for k in coarse]
    rs = max([rows_bands] + cols_bands)
    psum = torch.empty((1 + MAX_SLOTS, rs, channels), dtype=acc, device=grad.device)
    i64 = slots.needs_int64([grad, *grads, *t_of.values(), psum])
    rows_kernel = wrap_triton(exchange_bwd_rows_kernel)
    cols_kernel = wrap_triton(exchange_bwd_cols_kernel)
    red_kernel = wrap_triton(exchange_bwd_reduce_kernel)
    scale_row = 0
    for start in range(0, len(shapes), MAX_SLOTS):
        chunk = list(range(start, min(start + MAX_SLOTS, len(shapes))))
        first = start == 0
        descs, rows_args, cols_args, lengths = [], [], [], [rows_bands if first else 0]
        for j in range(MAX_SLOTS):
            if j >= len(chunk):
                descs.append(slots.UNUSED)
                rows_args += [None] * 5
                cols_args += [None] * 7
                lengths.append(0)
                continue
            k = chunk[j]
            x, s, shape = inputs[k], scales[k], shapes[k]
            direct = slots.kind(shape, size, mode) == slots.DIRECT
            chunk_log2 = 0 if direct else rows_cfg.get("CHUNK_LOG2", tuning.chunk_log2(bw, shape[3], width))
            descs.append(slots.descriptor(shape, layout[k], size, mode, s is not None, False, near64[k], chunk_log2))
            if direct:
                rows_args += [x if s is not None else None, s, grads[k], None, None]
                cols_args += [None] * 7
                lengths.append(rows_bands if s is not None else 0)
            else:
                sh, sw = slots.scales_of(shape, size, mode, align_corners, f64, near64[k])
                rows_args += [None, None, t_of[k], shape[3], sw]
                cols_args += [x if s is not None else None, s, t_of[k], grads[k], shape[2], shape[3], sh]
                lengths.append(cols_bands[coarse.index(k)] if s is not None else 0)
        common = dict(C=channels, D0=descs[0], D1=descs[1], D2=descs[2], D3=descs[3])
        roles = 1 + sum(slots.kind(shapes[k], size, mode) != slots.DIRECT for k in chunk)
        rows_kernel[(rows_bands * roles * triton.cdiv(channels, bc),)](
            grad, out if relu else None, gm if (want_gm and relu and first) else None, psum, *rows_args,
            n_img, height, width, rs, **common, CL=cl, ALIGN=align, RELU=bool(relu), SHIFT=first, I64=i64,
            BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc, num_warps=rows_cfg["num_warps"], num_stages=rows_cfg["num_stages"])
        here = [k for k in chunk if k in t_of]
        if here:
            programs = sum(cols_bands[coarse.index(k)] for k in here) * triton.cdiv(channels, cc)
            cols_kernel[(programs,)](
                psum, *cols_args, n_img, height, width, rs, **common, CL=cl, ALIGN=align, I64=i64,
                BLOCK_H=ch, BLOCK_W=cw, BLOCK_C=cc, num_warps=cols_cfg["num_warps"],
                num_stages=cols_cfg["num_stages"])
        rc = red_cfg["BLOCK_C"]
        given_here = sum(1 << j for j, k in enumerate(chunk) if scales[k] is not None)
        red_kernel[((1 + MAX_SLOTS) * triton.cdiv(channels, rc),)](
            psum, grad_shift if first else None, grad_scales if given_here else None, scale_row, rs, *lengths,
            C=channels, GIVEN=given_here, SHIFT=first,
            BLOCK_R=red_cfg["BLOCK_R"], BLOCK_C=rc, num_warps=red_cfg["num_warps"],
            num_stages=red_cfg["num_stages"])
        scale_row += sum(scales[k] is not None for k in chunk)
    return grads, grad_scales, grad_shift, gm
