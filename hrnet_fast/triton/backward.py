"""Backward kernels: the adjoint of the exchange, deterministic.

With gm = grad where out > 0 or out is NaN (torch.relu's backward), or grad, for every input k:
    G_k = adjoint_interp_k(gm)          (identity for same-size inputs)
    grad_x_k = scale_k * G_k
    grad_scale_k[c] = sum_{n, q} G_k * x_k
    grad_shift_k[c] = sum_{n, p} gm    (the same for every k)

The adjoint is a gather: each program owns a tile of source pixels x a
channel block of one image, finds for each source row / column the
contiguous range of output coordinates that read it (binary search on the
forward formulas, index.readers) and sums their masked gradients with the
forward weights. No atomics: every output element has one writer.

Per-channel sums use a fixed two-stage reduction: each program writes its
partial sums to its own row of a zero-initialized (rows, C) buffer, and a
torch sum over rows finishes. The buffer has rows for the smallest pixel
block any config uses, so whichever config runs, each program has a row;
rows no program writes stay zero. The autotuner runs several configs on the
same buffers, so it zeroes them before each (reset_to_zero): otherwise rows
written by a finer config it tried would be summed with the chosen one's.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from ..contract import follow_format
from . import config
from .forward import DIRECT, _offset, _tile, input_kind, is_flat
from .index import linear_scale, readers, tap_weight

MIN_BLOCK_P = min([c.kwargs["BLOCK_P"] for c in config.BACKWARD_CONFIGS] + [config.INTERP_BLOCK_P])


@triton.jit
def _masked_grad(grad_ptr, out_ptr, goff, ooff, mask, RELU: tl.constexpr, F64: tl.constexpr):
    if F64:
        g = tl.load(grad_ptr + goff, mask=mask, other=0.0).to(tl.float64)
    else:
        g = tl.load(grad_ptr + goff, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        o = tl.load(out_ptr + ooff, mask=mask, other=0.0)
        g = tl.where(o <= 0, 0.0, g)  # threshold_backward: a NaN output passes its gradient
    return g


# Configs with larger pixel blocks write fewer partial-sum rows: the rows are
# zeroed before each config the autotuner tries, and before the chosen one.
@config.maybe_autotune(config.BACKWARD_CONFIGS, key=["C", "HWIN", "HW", "CL"],
                       reset_to_zero=["psum_g_ptr", "psum_gx_ptr"])
@triton.jit
def exchange_bwd_kernel(
    grad_ptr, gsN, gsC, gsH, gsW,
    out_ptr, osN, osC, osH, osW,
    x_ptr, xsN, xsC, xsH, xsW,
    gx_ptr, dsN, dsC, dsH, dsW,
    sc_ptr, psum_g_ptr, psum_gx_ptr,
    C, H, W, h, w, HWIN, HW, CL, nsh, nsw, bsh, bsw, iter_h, iter_w, tile_rows,
    KIND: tl.constexpr, ALIGN: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr, RELU: tl.constexpr,
    FLAT_G: tl.constexpr, FLAT_O: tl.constexpr, FLAT_X: tl.constexpr, FLAT_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """grad_x = scale * G over one tile of source pixels, plus this tile's
    partial sums of G and G * x per channel."""
    n, q, qh, qw, c, qmask, cmask, mask = _tile(HWIN, w, C, BLOCK_P, BLOCK_C)
    gbase = _offset(n, gsN, I64) + _offset(c, gsC, I64)[None, :]
    obase = _offset(n, osN, I64) + _offset(c, osC, I64)[None, :]
    if KIND == 0:
        if FLAT_G:
            goff = gbase + _offset(q, gsW, I64)[:, None]
        else:
            goff = gbase + (_offset(qh, gsH, I64) + _offset(qw, gsW, I64))[:, None]
        if FLAT_O:
            ooff = obase + _offset(q, osW, I64)[:, None]
        else:
            ooff = obase + (_offset(qh, osH, I64) + _offset(qw, osW, I64))[:, None]
        G = _masked_grad(grad_ptr, out_ptr, goff, ooff, mask, RELU, F64)
    else:
        BIL: tl.constexpr = KIND == 2
        sh = linear_scale(h, H, bsh, ALIGN, F64)
        sw = linear_scale(w, W, bsw, ALIGN, F64)
        begin_h, end_h = readers(qh, h, H, nsh, sh, iter_h, BIL, ALIGN, F64)
        begin_w, end_w = readers(qw, w, W, nsw, sw, iter_w, BIL, ALIGN, F64)
        cnt_h = tl.where(qmask, end_h - begin_h, 0)
        cnt_w = tl.where(qmask, end_w - begin_w, 0)
        steps_h = tl.max(cnt_h, 0)
        steps_w = tl.max(cnt_w, 0)
        if F64:
            G = tl.zeros([BLOCK_P, BLOCK_C], tl.float64)
        else:
            G = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
        for i in range(0, steps_h):
            rh = begin_h + i
            vh = i < cnt_h
            wh = tap_weight(rh, qh, h, H, nsh, sh, BIL, ALIGN, F64)
            for j in range(0, steps_w):
                rw = begin_w + j
                valid = vh & (j < cnt_w)
                ww = tap_weight(rw, qw, w, W, nsw, sw, BIL, ALIGN, F64)
                goff = gbase + (_offset(rh, gsH, I64) + _offset(rw, gsW, I64))[:, None]
                ooff = obase + (_offset(rh, osH, I64) + _offset(rw, osW, I64))[:, None]
                m = valid[:, None] & cmask[None, :]
                g = _masked_grad(grad_ptr, out_ptr, goff, ooff, m, RELU, F64)
                G += (wh * ww).to(G.dtype)[:, None] * g
    # Source-sized tensors: flat pixel addressing when rows follow each other
    # (see forward._term), so the compiler sees contiguous NCHW rows.
    if FLAT_X:
        xpix = _offset(q, xsW, I64)
    else:
        xpix = _offset(qh, xsH, I64) + _offset(qw, xsW, I64)
    xoff = _offset(n, xsN, I64) + _offset(c, xsC, I64)[None, :] + xpix[:, None]
    x = tl.load(x_ptr + xoff, mask=mask, other=0.0).to(G.dtype)
    s = tl.load(sc_ptr + c, mask=cmask, other=0.0).to(G.dtype)
    if FLAT_D:
        dpix = _offset(q, dsW, I64)
    else:
        dpix = _offset(qh, dsH, I64) + _offset(qw, dsW, I64)
    doff = _offset(n, dsN, I64) + _offset(c, dsC, I64)[None, :] + dpix[:, None]
    tl.store(gx_ptr + doff, (G * s[None, :]).to(gx_ptr.dtype.element_ty), mask=mask)
    row = n * tile_rows + tl.program_id(0)
    tl.store(psum_g_ptr + row * C + c, tl.sum(G, 0), mask=cmask)
    tl.store(psum_gx_ptr + row * C + c, tl.sum(G * x, 0), mask=cmask)


def _launch_one(grad: Tensor, out: Tensor, x: Tensor, scale_row: Tensor, mode: str, align_corners: bool,
                relu: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(grad_x, sum of G per channel, sum of G * x per channel) for one input."""
    n_img, channels, height, width = out.shape
    h, w = x.shape[2], x.shape[3]
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=follow_format(x))
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    tile_rows = triton.cdiv(h * w, MIN_BLOCK_P)
    psum_g = torch.zeros((n_img * tile_rows, channels), dtype=acc_dtype, device=x.device)
    psum_gx = torch.zeros_like(psum_g)
    size = (height, width)
    nsh, bsh = config.axis_scales(h, height, align_corners)
    nsw, bsw = config.axis_scales(w, width, align_corners)
    grid = lambda m: (triton.cdiv(h * w, m["BLOCK_P"]), triton.cdiv(channels, m["BLOCK_C"]), n_img)
    wrap_triton(exchange_bwd_kernel)[grid](
        grad, *grad.stride(), out, *out.stride(), x, *x.stride(), gx, *gx.stride(),
        scale_row, psum_g, psum_gx,
        channels, height, width, h, w, h * w, height * width, int(x.stride(1) == 1 and channels > 1),
        nsh, nsw, bsh, bsw, config.search_steps(height), config.search_steps(width), tile_rows,
        KIND=input_kind(x, size, mode), ALIGN=bool(align_corners and mode == "bilinear"),
        F64=x.dtype == torch.float64, I64=config.needs_int64([grad, out, x, gx]), RELU=bool(relu),
        FLAT_G=is_flat(grad, size), FLAT_O=is_flat(out, size), FLAT_X=is_flat(x, (h, w)),
        FLAT_D=is_flat(gx, (h, w)),
        **config.fixed_meta(),
    )
    return gx, psum_g.sum(0), psum_gx.sum(0)


def launch_backward(grad: Tensor, out: Tensor, inputs: List[Tensor], scales: Tensor, mode: str,
                    align_corners: bool, relu: bool) -> Tuple[List[Tensor], Tensor, Tensor]:
    """Gradients of every input, of the dense scales (K, C) and the (C,)
    gradient every shift shares, in the scales' dtype."""
    if out.numel() == 0:
        grads = [torch.empty(x.shape, dtype=x.dtype, device=x.device,
                             memory_format=follow_format(x)).zero_() for x in inputs]
        return grads, torch.zeros_like(scales), torch.zeros_like(scales[0])
    size = tuple(out.shape[-2:])
    grads, sums_g, sums_gx = [], [], []
    for k, x in enumerate(inputs):
        gx, sg, sgx = _launch_one(grad, out, x, scales[k], mode, align_corners, relu)
        grads.append(gx)
        sums_g.append(sg)
        sums_gx.append(sgx)
    # Sum of gm over the output: exact from a same-size input (G == gm);
    # otherwise the adjoint preserves sums, so any input's sum of G equals it.
    direct = [k for k, x in enumerate(inputs) if input_kind(x, size, mode) == DIRECT]
    grad_shift = sums_g[direct[0] if direct else 0].to(scales.dtype)
    grad_scales = torch.stack(sums_gx).to(scales.dtype)
    return grads, grad_scales, grad_shift
