"""One-pass exchange with stride-2 3x3 conv terms: an implicit GEMM.

    y = act( sum_m conv2d(a_m, w_m, b_m, stride=2, padding=1) + sum_j affine_j(interp(x_j)) )

GEMM view: M = N * H * W output pixels (the batch folded in), N = C output
channels, K = sum_m 9 * C_m. Each program owns a BLOCK_M x BLOCK_N tile and
runs ONE software-pipelined loop over K, flattened over (conv term, tap,
channel block): iteration i belongs to term m for i in [E_m, E_{m+1}),
tap t = j // CB_m and channel block j % CB_m with j = i - E_m; all bounds
are compile-time constants (channel counts are constexprs), so the loop has
a constant trip count and the pipeliner keeps num_stages tiles in flight
across tap and term boundaries. A channel block never straddles a tap:
BLOCK_K is chosen per call to pad the channel counts least (tuning.py),
and the channel tail is masked, never assumed full.

Operands: A is the conv input gathered for the tap (zero outside the image:
padding 1), channels contiguous for channels_last inputs. B is read straight
from the weight in channels_last layout, which is (C_out, 3, 3, C_in) in
memory: row k = t * C_in + c_in of the K-major weight matrix, contiguous
along K. The launcher converts a weight to that layout (and to the input
dtype) only when it is not already.

The exchange terms (conv biases, same-size and interpolated inputs with
their affines) initialise the accumulator before the K loop when EARLY:
their loads are then in flight with the pipeline's prologue instead of
after the last K iteration, and need no registers beyond the accumulator.
A bilinear gather of a whole tile holds four taps, so with two or more
interpolated inputs the terms are added after the loop instead (EARLY
false): before it they pushed the kernel to 255 registers and spills
(tuning.conv_heuristic has the counts).

Numerics: float32 accumulation; bf16/fp16 operands on tensor cores; float32
operands go through tl.dot's TF32 (10-bit mantissa: relative error about
1e-3 of sum |a| |w| per output, the GPU tests allow 1e-2). float64 has no
tl.dot path: the backend lowers such calls to library convolutions.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import slots, tuning
from .forward import AUTOTUNE_KEYS, MAX_SLOTS, SCALES, slot_args, slot_descriptor
from .tiles import affine, gather_slot, pixel_offset, wide

MAX_CONVS = 3  # the deepest HRNet branch has three downsample chains


@triton.jit
def _bias(acc, b_ptr, co, comask):
    if b_ptr is not None:
        acc += tl.load(b_ptr + co, mask=comask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _exchange_terms(acc, x0_ptr, s0_ptr, b0_ptr, h0, w0, sh0, sw0, x1_ptr, s1_ptr, b1_ptr, h1, w1, sh1, sw1,
                    x2_ptr, s2_ptr, b2_ptr, h2, w2, sh2, sw2, x3_ptr, s3_ptr, b3_ptr, h3, w3, sh3, sw3,
                    c0_ptr, c1_ptr, c2_ptr, n, pix, oh, ow, co, comask, mask, H, W, C: tl.constexpr,
                    D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr, ALIGN: tl.constexpr,
                    I64: tl.constexpr):
    """acc + the conv biases + every exchange slot (with its affine)."""
    acc = _bias(acc, c0_ptr, co, comask)
    acc = _bias(acc, c1_ptr, co, comask)
    acc = _bias(acc, c2_ptr, co, comask)
    tile = (n, pix, oh, ow, co, comask, mask, H, W)
    acc = _slot_term(acc, x0_ptr, s0_ptr, b0_ptr, h0, w0, sh0, sw0, tile, C, D0, ALIGN, I64)
    acc = _slot_term(acc, x1_ptr, s1_ptr, b1_ptr, h1, w1, sh1, sw1, tile, C, D1, ALIGN, I64)
    acc = _slot_term(acc, x2_ptr, s2_ptr, b2_ptr, h2, w2, sh2, sw2, tile, C, D2, ALIGN, I64)
    acc = _slot_term(acc, x3_ptr, s3_ptr, b3_ptr, h3, w3, sh3, sw3, tile, C, D3, ALIGN, I64)
    return acc


@triton.jit
def _slot_term(acc, x_ptr, s_ptr, b_ptr, h, w, sh, sw, tile, C: tl.constexpr, D: tl.constexpr, ALIGN: tl.constexpr,
               I64: tl.constexpr):
    """acc + one exchange slot with its affine (nothing for an unused
    slot); tile: the output tile's (n, pix, oh, ow, co, comask, mask, H, W)."""
    if (D & 3) != 0:
        n, pix, oh, ow, co, comask, mask, H, W = tile
        v = gather_slot(x_ptr, h, w, sh, sw, n, pix, oh, ow, co, mask, H, W, C, D, ALIGN, False, I64)
        acc = affine(acc, v, s_ptr, b_ptr, co, comask, D)
    return acc


@triton.jit(do_not_specialize=SCALES)
def exchange_conv_kernel(
    y_ptr,
    x0_ptr, s0_ptr, b0_ptr, h0, w0, sh0, sw0,
    x1_ptr, s1_ptr, b1_ptr, h1, w1, sh1, sw1,
    x2_ptr, s2_ptr, b2_ptr, h2, w2, sh2, sw2,
    x3_ptr, s3_ptr, b3_ptr, h3, w3, sh3, sw3,
    a0_ptr, k0_ptr, c0_ptr, ha0, wa0,
    a1_ptr, k1_ptr, c1_ptr, ha1, wa1,
    a2_ptr, k2_ptr, c2_ptr, ha2, wa2,
    N, H, W,
    C: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr,
    CIN0: tl.constexpr, CIN1: tl.constexpr, CIN2: tl.constexpr, A_CL: tl.constexpr, OUT_CL: tl.constexpr,
    ALIGN: tl.constexpr, RELU: tl.constexpr, I64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EARLY: tl.constexpr,
):
    """Conv term m: input a_m (CIN_m channels, ha_m x wa_m), its weight in
    channels_last layout k_m, its bias c_m (None when absent); CIN_m == 0
    marks an unused term. Exchange slots as in forward.py."""
    NUM_N: tl.constexpr = (C + BLOCK_N - 1) // BLOCK_N
    CB0: tl.constexpr = (CIN0 + BLOCK_K - 1) // BLOCK_K
    CB1: tl.constexpr = (CIN1 + BLOCK_K - 1) // BLOCK_K
    CB2: tl.constexpr = (CIN2 + BLOCK_K - 1) // BLOCK_K
    E0: tl.constexpr = 9 * CB0
    E1: tl.constexpr = E0 + 9 * CB1
    TOTAL: tl.constexpr = E1 + 9 * CB2
    EVEN_K: tl.constexpr = (CIN0 % BLOCK_K == 0) and (CIN1 % BLOCK_K == 0) and (CIN2 % BLOCK_K == 0)

    pid = tl.program_id(0)
    pid_n = pid % NUM_N
    pid_m = pid // NUM_N
    hw = wide(H, I64) * W
    p = wide(pid_m, I64) * BLOCK_M + tl.arange(0, BLOCK_M)
    pmask = p < N * hw
    n = p // hw
    pix = p - n * hw
    oh = (pix // W).to(tl.int32)
    ow = (pix % W).to(tl.int32)
    co = wide(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), I64)
    comask = co < C
    mask = pmask[:, None] & comask[None, :]

    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if EARLY:  # the exchange terms first (module note); else after the loop
        acc = _exchange_terms(acc, x0_ptr, s0_ptr, b0_ptr, h0, w0, sh0, sw0, x1_ptr, s1_ptr, b1_ptr, h1, w1, sh1,
                              sw1, x2_ptr, s2_ptr, b2_ptr, h2, w2, sh2, sw2, x3_ptr, s3_ptr, b3_ptr, h3, w3, sh3,
                              sw3, c0_ptr, c1_ptr, c2_ptr, n, pix, oh, ow, co, comask, mask, H, W, C, D0, D1, D2,
                              D3, ALIGN, I64)

    kk = tl.arange(0, BLOCK_K)
    ih0 = 2 * oh - 1
    iw0 = 2 * ow - 1
    for i in range(0, TOTAL):
        # Which term, tap and channel block: scalar selects between constants.
        if CIN1 == 0:
            j = i
            cbs = CB0
            cin = CIN0
            ha = ha0
            wa = wa0
            a_ptr = a0_ptr
            k_ptr = k0_ptr
        elif CIN2 == 0:
            second = i >= E0
            j = i - tl.where(second, E0, 0)
            cbs = tl.where(second, CB1, CB0)
            cin = tl.where(second, CIN1, CIN0)
            ha = tl.where(second, ha1, ha0)
            wa = tl.where(second, wa1, wa0)
            a_ptr = tl.where(second, a1_ptr, a0_ptr)
            k_ptr = tl.where(second, k1_ptr, k0_ptr)
        else:
            second = i >= E0
            third = i >= E1
            j = i - tl.where(third, E1, tl.where(second, E0, 0))
            cbs = tl.where(third, CB2, tl.where(second, CB1, CB0))
            cin = tl.where(third, CIN2, tl.where(second, CIN1, CIN0))
            ha = tl.where(third, ha2, tl.where(second, ha1, ha0))
            wa = tl.where(third, wa2, tl.where(second, wa1, wa0))
            a_ptr = tl.where(third, a2_ptr, tl.where(second, a1_ptr, a0_ptr))
            k_ptr = tl.where(third, k2_ptr, tl.where(second, k1_ptr, k0_ptr))
        t = j // cbs
        ci = (j - t * cbs) * BLOCK_K + kk
        kh = t // 3
        ih = ih0 + kh
        iw = iw0 + (t - 3 * kh)
        valid = pmask & (ih >= 0) & (ih < ha) & (iw >= 0) & (iw < wa)
        if A_CL:
            a_off = (((n * ha + ih) * wa + iw) * cin)[:, None] + ci[None, :]
        else:
            a_off = (n * cin * ha * wa + ih * wa + iw)[:, None] + (ci * (ha * wa))[None, :]
        b_off = (t * cin + ci)[:, None] + (co * (9 * cin))[None, :]
        if EVEN_K:
            a = tl.load(a_ptr + a_off, mask=valid[:, None], other=0.0)
            b = tl.load(k_ptr + b_off, mask=comask[None, :], other=0.0)
        else:
            kmask = ci < cin
            a = tl.load(a_ptr + a_off, mask=valid[:, None] & kmask[None, :], other=0.0)
            b = tl.load(k_ptr + b_off, mask=kmask[:, None] & comask[None, :], other=0.0)
        acc = tl.dot(a, b, acc)

    if not EARLY:
        acc = _exchange_terms(acc, x0_ptr, s0_ptr, b0_ptr, h0, w0, sh0, sw0, x1_ptr, s1_ptr, b1_ptr, h1, w1, sh1,
                              sw1, x2_ptr, s2_ptr, b2_ptr, h2, w2, sh2, sw2, x3_ptr, s3_ptr, b3_ptr, h3, w3, sh3,
                              sw3, c0_ptr, c1_ptr, c2_ptr, n, pix, oh, ow, co, comask, mask, H, W, C, D0, D1, D2,
                              D3, ALIGN, I64)
    if RELU:
        acc = tl.where(acc < 0.0, 0.0, acc)  # torch.relu: NaN stays NaN
    yoff = pixel_offset(n, pix, co, hw, C, OUT_CL)
    tl.store(y_ptr + yoff, acc.to(y_ptr.dtype.element_ty), mask=mask)


def kmajor_weight(w: Tensor, dtype: torch.dtype) -> Tensor:
    """The weight as the kernel reads it: channels_last (C_out, 3, 3, C_in
    in memory) in the activations' dtype; `w` itself when it already is."""
    if w.dtype != dtype:
        w = w.to(dtype)
    return slots.as_format(w, torch.channels_last)


def launch_conv_forward(out: Tensor, inputs: List[Tensor], scales: List[Optional[Tensor]],
                        shifts: List[Optional[Tensor]], conv_inputs: List[Tensor], weights: List[Tensor],
                        biases: List[Optional[Tensor]], mode: str, align_corners: bool, relu: bool) -> None:
    """Fill `out` with the one-pass exchange. Inputs and conv inputs in
    standard layouts, the conv inputs all in one; weights as kmajor_weight
    gives them."""
    n_img, channels, height, width = (int(v) for v in out.shape)
    if out.numel() == 0:
        return
    size = (height, width)
    args, descs = [], []
    for j in range(MAX_SLOTS):
        if j < len(inputs):
            args += slot_args(inputs[j], scales[j], shifts[j], size, mode, align_corners)
            descs.append(slot_descriptor(inputs[j], scales[j], shifts[j], size, mode))
        else:
            args += slot_args(None, None, None, size, mode, align_corners)
            descs.append(slots.UNUSED)
    conv_args, cins = [], []
    for m in range(MAX_CONVS):
        if m < len(conv_inputs):
            a = conv_inputs[m]
            conv_args += [a, weights[m], biases[m], a.shape[2], a.shape[3]]
            cins.append(int(a.shape[1]))
        else:
            conv_args += [None] * 5
            cins.append(0)
    grid_of = lambda block_m, block_n: (triton.cdiv(n_img * height * width, block_m)  # noqa: E731
                                        * triton.cdiv(channels, block_n),)
    if tuning.AUTOTUNE:
        # Opt-in: time the candidates on each new shape (tuning.py).
        kernel = wrap_triton(tuning.autotuner("conv", exchange_conv_kernel, AUTOTUNE_KEYS + ["CIN0", "CIN1", "CIN2"],
                                              out.dtype, channels, slots.is_cl(out), cins))
        grid = lambda meta: grid_of(meta["BLOCK_M"], meta["BLOCK_N"])  # noqa: E731
        meta = {}
    else:
        kernel = wrap_triton(exchange_conv_kernel)
        cfg = tuning.conv_config(out, inputs, conv_inputs, size, mode)
        grid = grid_of(cfg["BLOCK_M"], cfg["BLOCK_N"])
        meta = dict(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                    EARLY=bool(cfg.get("EARLY", True)), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    kernel[grid](
        out, *args, *conv_args, n_img, height, width,
        C=channels, D0=descs[0], D1=descs[1], D2=descs[2], D3=descs[3], CIN0=cins[0], CIN1=cins[1],
        CIN2=cins[2], A_CL=slots.is_cl(conv_inputs[0]), OUT_CL=slots.is_cl(out),
        ALIGN=bool(align_corners and mode == "bilinear"), RELU=bool(relu),
        I64=slots.needs_int64([out, *inputs, *conv_inputs]), **meta,
    )
