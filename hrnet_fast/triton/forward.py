"""Forward kernel: one pass over the output, one launch.

Each program owns BLOCK_P output pixels x BLOCK_C channels. channels_last
outputs fold the batch into the pixel index (flat tiles, contiguous channel
vectors); NCHW outputs tile each image's pixel plane (contiguous rows). The
program gathers every input slot (all loads issued before any arithmetic:
the slots are unrolled at compile time from their descriptors), applies the
per-channel affines that are given, sums in float32 (float64 for float64
tensors), applies ReLU and stores once.

Arguments: per slot the input, its scale and shift (None when absent) and,
when it is interpolated, its size and its exact row and column scales
(slots.axis_scale; None when same-size); the output size. Every other fact
is a compile-time constant. More inputs than MAX_SLOTS chain
launches through a partial sum in the accumulation dtype.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import slots, tuning
from .tiles import affine, gather_slot, pixel_offset, wide

MAX_SLOTS = 4


@triton.jit
def flat_tile(N, H, W, C: tl.constexpr, OUT_CL: tl.constexpr, I64: tl.constexpr, BLOCK_P: tl.constexpr,
              BLOCK_C: tl.constexpr):
    """This program's tile: image index n (a [P] vector for channels_last,
    whose tiles span images; a scalar for NCHW), pixel-in-image pix, row oh,
    column ow, channels c, and masks. Channel blocks vary fastest."""
    NUM_CB: tl.constexpr = (C + BLOCK_C - 1) // BLOCK_C
    pid = tl.program_id(0)
    cb = pid % NUM_CB
    rest = pid // NUM_CB
    hw = wide(H, I64) * W
    c = wide(cb * BLOCK_C + tl.arange(0, BLOCK_C), I64)
    if OUT_CL:
        p = wide(rest, I64) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < N * hw
        n = p // hw
        pix = p - n * hw
    else:
        tiles = tl.cdiv(H * W, BLOCK_P)
        n = wide(rest // tiles, I64)
        pix = (rest % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = pix < H * W
    oh = (pix // W).to(tl.int32)
    ow = (pix % W).to(tl.int32)
    return n, pix, oh, ow, c, pmask, c < C


# Scale arguments carry exact values or float64 bits: specializing them on
# divisibility would only compile duplicates.
SCALES = [f"{a}{j}" for j in range(MAX_SLOTS) for a in ("sh", "sw")]
# What makes a new shape for opt-in autotuning (tuning.autotuner).
AUTOTUNE_KEYS = ["N", "H", "W", "C", "D0", "D1", "D2", "D3", "OUT_CL", "ALIGN"]


@triton.jit(do_not_specialize=SCALES)
def exchange_fwd_kernel(
    y_ptr, acc_in_ptr, acc_out_ptr,
    x0_ptr, s0_ptr, b0_ptr, h0, w0, sh0, sw0,
    x1_ptr, s1_ptr, b1_ptr, h1, w1, sh1, sw1,
    x2_ptr, s2_ptr, b2_ptr, h2, w2, sh2, sw2,
    x3_ptr, s3_ptr, b3_ptr, h3, w3, sh3, sw3,
    N, H, W,
    C: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr,
    OUT_CL: tl.constexpr, ALIGN: tl.constexpr, RELU: tl.constexpr, CHAIN: tl.constexpr, I64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y = act(acc_in + sum_j affine_j(interp(x_j))) over one tile. CHAIN
    bit 0: add the partial sum acc_in; bit 1: store the un-activated sum to
    acc_out instead of y (two buffers, so every launch is idempotent)."""
    F64: tl.constexpr = y_ptr.dtype.element_ty == tl.float64
    n, pix, oh, ow, c, pmask, cmask = flat_tile(N, H, W, C, OUT_CL, I64, BLOCK_P, BLOCK_C)
    mask = pmask[:, None] & cmask[None, :]
    yoff = pixel_offset(n, pix, c, wide(H, I64) * W, C, OUT_CL)
    # Every slot's loads first: nothing below depends on another slot.
    v0 = gather_slot(x0_ptr, h0, w0, sh0, sw0, n, pix, oh, ow, c, mask, H, W, C, D0, ALIGN, F64, I64)
    if (D1 & 3) != 0:
        v1 = gather_slot(x1_ptr, h1, w1, sh1, sw1, n, pix, oh, ow, c, mask, H, W, C, D1, ALIGN, F64, I64)
    if (D2 & 3) != 0:
        v2 = gather_slot(x2_ptr, h2, w2, sh2, sw2, n, pix, oh, ow, c, mask, H, W, C, D2, ALIGN, F64, I64)
    if (D3 & 3) != 0:
        v3 = gather_slot(x3_ptr, h3, w3, sh3, sw3, n, pix, oh, ow, c, mask, H, W, C, D3, ALIGN, F64, I64)
    if CHAIN & 1:
        acc = tl.load(acc_in_ptr + yoff, mask=mask, other=0.0)
    else:
        acc = tl.zeros([BLOCK_P, BLOCK_C], v0.dtype)
    acc = affine(acc, v0, s0_ptr, b0_ptr, c, cmask, D0)
    if (D1 & 3) != 0:
        acc = affine(acc, v1, s1_ptr, b1_ptr, c, cmask, D1)
    if (D2 & 3) != 0:
        acc = affine(acc, v2, s2_ptr, b2_ptr, c, cmask, D2)
    if (D3 & 3) != 0:
        acc = affine(acc, v3, s3_ptr, b3_ptr, c, cmask, D3)
    if CHAIN & 2:
        tl.store(acc_out_ptr + yoff, acc, mask=mask)
    else:
        if RELU:
            acc = tl.where(acc < 0.0, 0.0, acc)  # torch.relu: NaN stays NaN
        tl.store(y_ptr + yoff, acc.to(y_ptr.dtype.element_ty), mask=mask)


def slot_args(x: Optional[Tensor], scale: Optional[Tensor], shift: Optional[Tensor], size, mode: str,
              align_corners: bool) -> list:
    """One slot's runtime arguments: the input, its affine rows (None when
    absent) and, when it is interpolated, its size and scales (None when
    same-size or unused, so nothing is passed for them)."""
    if x is None:
        return [None] * 7
    if slots.kind(x.shape, size, mode) == slots.DIRECT:
        return [x, scale, shift, None, None, None, None]
    shape, _, near64 = slots.facts(x, size, mode)
    return [x, scale, shift, x.shape[2], x.shape[3],
            *slots.scales_of(shape, size, mode, align_corners, x.dtype == torch.float64, near64)]


def slot_descriptor(x: Tensor, scale: Optional[Tensor], shift: Optional[Tensor], size, mode: str) -> int:
    """One input slot's compile-time descriptor (slots.py)."""
    shape, cl, near64 = slots.facts(x, size, mode)
    return slots.descriptor(shape, cl, size, mode, scale is not None, shift is not None, near64)


def launch_forward(out: Tensor, inputs: List[Tensor], scales: List[Optional[Tensor]],
                   shifts: List[Optional[Tensor]], mode: str, align_corners: bool, relu: bool) -> None:
    """Fill `out` (contiguous NCHW or channels_last) with the exchange of
    `inputs` (each in a standard layout, see slots.standard); scales and
    shifts one optional row per input. One launch for up to MAX_SLOTS inputs."""
    n_img, channels, height, width = (int(v) for v in out.shape)
    if out.numel() == 0:
        return
    size = (height, width)
    out_cl = slots.is_cl(out)

    def programs(block_p: int, block_c: int) -> int:
        tiles = triton.cdiv(n_img * height * width, block_p) if out_cl else n_img * triton.cdiv(height * width,
                                                                                                block_p)
        return tiles * triton.cdiv(channels, block_c)

    chunks = [list(range(k, min(k + MAX_SLOTS, len(inputs)))) for k in range(0, len(inputs), MAX_SLOTS)]
    if tuning.AUTOTUNE and len(chunks) == 1:
        # Opt-in: time the candidates on each new shape (tuning.py).
        kernel = wrap_triton(tuning.autotuner("fwd", exchange_fwd_kernel, AUTOTUNE_KEYS, out.dtype, channels,
                                              out_cl))
        grid = lambda meta: (programs(meta["BLOCK_P"], meta["BLOCK_C"]),)  # noqa: E731
        meta = {}
    else:
        kernel = wrap_triton(exchange_fwd_kernel)
        cfg = tuning.forward_config(out, inputs, size, mode)
        grid = (programs(cfg["BLOCK_P"], cfg["BLOCK_C"]),)
        meta = dict(BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], num_warps=cfg["num_warps"],
                    num_stages=cfg["num_stages"])
    acc_dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
    bufs = [torch.empty_like(out, dtype=acc_dtype) for _ in range(min(len(chunks) - 1, 2))]
    i64 = slots.needs_int64([out, *inputs])
    align = bool(align_corners and mode == "bilinear")
    for ci, chunk in enumerate(chunks):
        first, last = ci == 0, ci == len(chunks) - 1
        args, descs = [], []
        for j in range(MAX_SLOTS):
            if j < len(chunk):
                k = chunk[j]
                args += slot_args(inputs[k], scales[k], shifts[k], size, mode, align_corners)
                descs.append(slot_descriptor(inputs[k], scales[k], shifts[k], size, mode))
            else:
                args += slot_args(None, None, None, size, mode, align_corners)
                descs.append(slots.UNUSED)
        chain = (0 if first else 1) | (0 if last else 2)
        kernel[grid](
            out, None if first else bufs[(ci - 1) % 2], None if last else bufs[ci % 2], *args,
            n_img, height, width,
            C=channels, D0=descs[0], D1=descs[1], D2=descs[2], D3=descs[3], OUT_CL=out_cl, ALIGN=align,
            RELU=bool(relu), CHAIN=chain, I64=i64, **meta,
        )
