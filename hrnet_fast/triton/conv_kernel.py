"""One-pass exchange with stride-2 3x3 conv terms: an implicit-GEMM kernel.

Each program owns BLOCK_P output pixels x BLOCK_C output channels of one
image and accumulates, with tl.dot, the GEMM over K = sum_m 9 * C_m: for
each conv term and each of the 9 taps, a [BLOCK_P, BLOCK_K] tile of the
conv input (zero outside the image: padding 1) times a [BLOCK_K, BLOCK_C]
tile of the weights, reshaped on the host to (9 * C_m, C_out) with row
(kh * 3 + kw) * C_m + c_in. The epilogue adds the biases, the same-size
inputs and the gathered coarse inputs with their affines (forward._affine_term,
the same code as the exchange), applies ReLU and stores once: the
convolution's output never touches memory.

Every tile is masked (HRNet-W18 has 18/36/72/144 channels, never a
multiple of a tile). Accumulation is float32; float32 inputs go through
tl.dot's default TF32 on GPUs that have it (about 1e-3 relative).
"""
from __future__ import annotations

from typing import List

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import config
from .forward import MAX_SLOTS, UNUSED, _affine_term, _offset, _slot_args, _tile, input_kind, is_flat

MAX_CONVS = 3  # the deepest HRNet branch has three downsample chains

CONV_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_C": c, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for p, c, k, w, s in [
        (64, 32, 32, 4, 3), (128, 32, 32, 4, 3), (64, 64, 32, 4, 3), (128, 64, 32, 8, 3),
        (128, 16, 32, 4, 3), (64, 16, 64, 4, 3), (128, 128, 32, 8, 3), (256, 64, 32, 8, 3),
    ]
]
INTERP_META = {"BLOCK_P": 16, "BLOCK_C": 16, "BLOCK_K": 16}


@triton.jit
def _conv_term(acc, a_ptr, sN, sC, sH, sW, CIN, HA, WA, w_ptr, n, oh, ow, pmask, c, cmask, C,
               I64: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc + conv2d(a, w, stride=2, padding=1)[n, c, oh, ow] over one tile."""
    abase = a_ptr + _offset(n, sN, I64)
    kk = tl.arange(0, BLOCK_K)
    for t in tl.static_range(9):
        ih = 2 * oh - 1 + t // 3
        iw = 2 * ow - 1 + t % 3
        valid = pmask & (ih >= 0) & (ih < HA) & (iw >= 0) & (iw < WA)
        pix = _offset(ih, sH, I64) + _offset(iw, sW, I64)
        for k0 in range(0, CIN, BLOCK_K):
            ci = k0 + kk
            kmask = ci < CIN
            a = tl.load(abase + pix[:, None] + _offset(ci, sC, I64)[None, :],
                        mask=valid[:, None] & kmask[None, :], other=0.0)
            b = tl.load(w_ptr + (t * CIN + ci)[:, None] * C + c[None, :],
                        mask=kmask[:, None] & cmask[None, :], other=0.0)
            acc += tl.dot(a, b)
    return acc


@config.maybe_autotune(CONV_CONFIGS, key=["C", "HW", "KTOT"])
@triton.jit
def exchange_conv_fwd_kernel(
    y_ptr, sc_ptr, sh_ptr, bias_ptr,
    x0_ptr, x0_sN, x0_sC, x0_sH, x0_sW, x0_h, x0_w, x0_nsh, x0_nsw, x0_bsh, x0_bsw,
    x1_ptr, x1_sN, x1_sC, x1_sH, x1_sW, x1_h, x1_w, x1_nsh, x1_nsw, x1_bsh, x1_bsw,
    x2_ptr, x2_sN, x2_sC, x2_sH, x2_sW, x2_h, x2_w, x2_nsh, x2_nsw, x2_bsh, x2_bsw,
    x3_ptr, x3_sN, x3_sC, x3_sH, x3_sW, x3_h, x3_w, x3_nsh, x3_nsw, x3_bsh, x3_bsw,
    a0_ptr, a0_sN, a0_sC, a0_sH, a0_sW, a0_c, a0_h, a0_w, w0_ptr,
    a1_ptr, a1_sN, a1_sC, a1_sH, a1_sW, a1_c, a1_h, a1_w, w1_ptr,
    a2_ptr, a2_sN, a2_sC, a2_sH, a2_sW, a2_c, a2_h, a2_w, w2_ptr,
    C, H, W, HW, KTOT, syN, syC, syH, syW,
    KIND0: tl.constexpr, KIND1: tl.constexpr, KIND2: tl.constexpr, KIND3: tl.constexpr,
    FLAT0: tl.constexpr, FLAT1: tl.constexpr, FLAT2: tl.constexpr, FLAT3: tl.constexpr, FLAT_Y: tl.constexpr,
    NCONV: tl.constexpr, ALIGN: tl.constexpr, I64: tl.constexpr, RELU: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = act(sum_m conv_m + bias + sum_j scale_j * interp(x_j) + shift_j)."""
    n, p, oh, ow, c, pmask, cmask, mask = _tile(HW, W, C, BLOCK_P, BLOCK_C)
    acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    if NCONV > 0:
        acc = _conv_term(acc, a0_ptr, a0_sN, a0_sC, a0_sH, a0_sW, a0_c, a0_h, a0_w, w0_ptr, n, oh, ow, pmask,
                         c, cmask, C, I64, BLOCK_K)
    if NCONV > 1:
        acc = _conv_term(acc, a1_ptr, a1_sN, a1_sC, a1_sH, a1_sW, a1_c, a1_h, a1_w, w1_ptr, n, oh, ow, pmask,
                         c, cmask, C, I64, BLOCK_K)
    if NCONV > 2:
        acc = _conv_term(acc, a2_ptr, a2_sN, a2_sC, a2_sH, a2_sW, a2_c, a2_h, a2_w, w2_ptr, n, oh, ow, pmask,
                         c, cmask, C, I64, BLOCK_K)
    acc += tl.load(bias_ptr + c, mask=cmask, other=0.0)[None, :]
    acc = _affine_term(acc, sc_ptr, sh_ptr, 0, C, c, cmask,
                       x0_ptr, x0_sN, x0_sC, x0_sH, x0_sW, x0_h, x0_w, H, W, x0_nsh, x0_nsw, x0_bsh, x0_bsw,
                       n, p, oh, ow, mask, KIND0, FLAT0, ALIGN, False, I64)
    acc = _affine_term(acc, sc_ptr, sh_ptr, 1, C, c, cmask,
                       x1_ptr, x1_sN, x1_sC, x1_sH, x1_sW, x1_h, x1_w, H, W, x1_nsh, x1_nsw, x1_bsh, x1_bsw,
                       n, p, oh, ow, mask, KIND1, FLAT1, ALIGN, False, I64)
    acc = _affine_term(acc, sc_ptr, sh_ptr, 2, C, c, cmask,
                       x2_ptr, x2_sN, x2_sC, x2_sH, x2_sW, x2_h, x2_w, H, W, x2_nsh, x2_nsw, x2_bsh, x2_bsw,
                       n, p, oh, ow, mask, KIND2, FLAT2, ALIGN, False, I64)
    acc = _affine_term(acc, sc_ptr, sh_ptr, 3, C, c, cmask,
                       x3_ptr, x3_sN, x3_sC, x3_sH, x3_sW, x3_h, x3_w, H, W, x3_nsh, x3_nsw, x3_bsh, x3_bsw,
                       n, p, oh, ow, mask, KIND3, FLAT3, ALIGN, False, I64)
    if RELU:
        acc = tl.where(acc < 0.0, 0.0, acc)  # torch.relu: NaN stays NaN
    if FLAT_Y:
        ypix = _offset(p, syW, I64)
    else:
        ypix = _offset(oh, syH, I64) + _offset(ow, syW, I64)
    yoff = _offset(n, syN, I64) + _offset(c, syC, I64)[None, :] + ypix[:, None]
    tl.store(y_ptr + yoff, acc.to(y_ptr.dtype.element_ty), mask=mask)


def weight_matrix(w: Tensor) -> Tensor:
    """(C_out, C_in, 3, 3) -> (9 * C_in, C_out), row (kh * 3 + kw) * C_in + c_in:
    the B operand of the implicit GEMM, contiguous along output channels."""
    return w.permute(2, 3, 1, 0).reshape(-1, w.shape[0]).contiguous()


def launch_conv_forward(out: Tensor, inputs: List[Tensor], scales: Tensor, shifts: Tensor,
                        conv_inputs: List[Tensor], weights: List[Tensor], bias: Tensor, mode: str,
                        align_corners: bool, relu: bool) -> None:
    """Fill `out` with the one-pass exchange; `bias` is the (C,) float32 sum
    of the conv biases, `weights` already in weight_matrix layout and the
    conv inputs' dtype."""
    n_img, channels, height, width = out.shape
    if out.numel() == 0:
        return
    size = (height, width)
    slots, kinds, flats = [], [], []
    for j in range(MAX_SLOTS):
        x = inputs[j] if j < len(inputs) else inputs[0]
        slots += _slot_args(x, size, align_corners)
        kinds.append(input_kind(x, size, mode) if j < len(inputs) else UNUSED)
        flats.append(is_flat(x, size) if j < len(inputs) else False)
    conv_slots = []
    for m in range(MAX_CONVS):
        a, w = (conv_inputs[m], weights[m]) if m < len(conv_inputs) else (conv_inputs[0], weights[0])
        conv_slots += [a, *a.stride(), a.shape[1], a.shape[2], a.shape[3], w]
    ktot = sum(9 * a.shape[1] for a in conv_inputs)
    i64 = config.needs_int64([out, *inputs, *conv_inputs])
    meta = INTERP_META if config.INTERPRET else {}
    grid = lambda m: (triton.cdiv(height * width, m["BLOCK_P"]), triton.cdiv(channels, m["BLOCK_C"]), n_img)
    wrap_triton(exchange_conv_fwd_kernel)[grid](
        out, scales, shifts, bias, *slots, *conv_slots,
        channels, height, width, height * width, ktot, *out.stride(),
        KIND0=kinds[0], KIND1=kinds[1], KIND2=kinds[2], KIND3=kinds[3],
        FLAT0=flats[0], FLAT1=flats[1], FLAT2=flats[2], FLAT3=flats[3], FLAT_Y=is_flat(out, size),
        NCONV=len(conv_inputs), ALIGN=bool(align_corners and mode == "bilinear"), I64=i64, RELU=bool(relu),
        **meta,
    )
