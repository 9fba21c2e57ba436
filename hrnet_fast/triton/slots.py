"""How a call's tensors reach the kernels: layouts and slot descriptors.

Kernels address every tensor through its sizes alone: each tensor is either
contiguous NCHW or contiguous channels_last, said by one bit, so no strides
travel as arguments. A tensor in any other layout (a strided view, an
expanded gradient) is copied once to contiguous NCHW by `standard`; the
layouts models use are never copied.

Each input occupies a slot, described to the kernel by one compile-time
integer (the input pattern), so that the kernel is specialized for exactly
the inputs it has and issues every load before the arithmetic:

    bits 0-1  kind: UNUSED, DIRECT (same size), NEAREST, BILINEAR
    bit  2    the input is channels_last
    bit  3    a scale is given (absent: identity, nothing loaded)
    bit  4    a shift is given
    bits 5-8  log2 of the backward W pass's column chunk (backward only)
    bit  9    nearest with the float64 formula (nearest_uses_double)
"""
from __future__ import annotations

import struct
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

UNUSED, DIRECT, NEAREST, BILINEAR = 0, 1, 2, 3
CL_BIT, SCALE_BIT, SHIFT_BIT = 4, 8, 16
CHUNK_SHIFT = 5
NEAR64_BIT = 512


def is_cl(t: Tensor) -> bool:
    """True when `t` is addressed as channels_last: contiguous in that
    format and not (also) in NCHW. A tensor contiguous in both (C == 1 or
    H * W == 1) has the same offsets either way."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def standard(t: Tensor) -> Tensor:
    """`t`, or a contiguous NCHW copy when it is in neither layout."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    return as_format(t, torch.contiguous_format)


def vector(t: Optional[Tensor]) -> Optional[Tensor]:
    """A (C,) affine row or bias as the kernels read it: unit stride."""
    return t if t is None or t.is_contiguous() else t.clone(memory_format=torch.contiguous_format)


def as_format(t: Tensor, fmt: torch.memory_format) -> Tensor:
    """`t` contiguous in `fmt`, copied only when it is not. A clone, not
    .contiguous(): on fake CUDA tensors copy_ reaches the device."""
    return t if t.is_contiguous(memory_format=fmt) else t.clone(memory_format=fmt)


Shape = Sequence[int]  # (N, C, h, w)


def kind(shape: Shape, size: Sequence[int], mode: str) -> int:
    """How an input of `shape` reaches the output grid: read directly, or
    interpolated."""
    if shape[2] == size[0] and shape[3] == size[1]:
        return DIRECT
    return NEAREST if mode == "nearest" else BILINEAR


def nearest_uses_double(shape: Shape, cl: bool, dtype: torch.dtype, device: torch.device, size: Sequence[int],
                        mode: str) -> bool:
    """Whether F.interpolate picks an input's nearest sources with the
    float64 formula (kernels/interp.h): only ATen's CPU generic kernel does,
    so only for float64 CPU tensors (the interpreter's) that its vectorised
    kernels leave to it. On CUDA every dtype takes the float32 formula."""
    return (mode == "nearest" and device.type == "cpu" and dtype == torch.float64
            and not ((cl and int(shape[1]) > 3) or int(size[0]) + int(size[1]) <= 128))


def facts(x: Tensor, size: Sequence[int], mode: str) -> Tuple[Shape, bool, bool]:
    """(shape, channels_last, nearest in float64) of an input in a standard
    layout: what the descriptor and the scales are made of. The backward
    has these, not the values, for inputs without a scale."""
    cl = is_cl(x)
    return x.shape, cl, nearest_uses_double(x.shape, cl, x.dtype, x.device, size, mode)


def axis_scale(n_in: int, n_out: int, mode: str, align_corners: bool, f64: bool,
               near64: bool = False) -> Union[float, int]:
    """One axis's source-per-output scale exactly as ATen computes it:
    nearest: float(in) / float(out) in float32 (for every dtype), or in
    float64 with `near64` (nearest_uses_double); bilinear:
    area_pixel_compute_scale in the op-math type, float32 ((in - 1) /
    (out - 1), 0 for out == 1, with align_corners; else in / out), or
    float64 for float64 tensors. A float32 value travels as a Python float
    (a float kernel argument is float32, so it arrives unchanged); a float64
    one as its bits in an int (the kernel bitcasts them back)."""
    n_in, n_out = int(n_in), int(n_out)  # SymInts under tracing: specialize
    if mode == "bilinear" and align_corners:
        num, den = n_in - 1, n_out - 1
    else:
        num, den = n_in, n_out
    if (mode == "bilinear" and f64) or (mode == "nearest" and near64):
        value = num / den if den > 0 else 0.0
        return struct.unpack("<q", struct.pack("<d", value))[0]
    return float(np.float32(num) / np.float32(den)) if den > 0 else 0.0


def scales_of(shape: Shape, size: Sequence[int], mode: str, align_corners: bool, f64: bool, near64: bool) -> list:
    """(row scale, column scale) of an interpolated input; [None, None] for
    a same-size one (nothing is passed for it)."""
    if kind(shape, size, mode) == DIRECT:
        return [None, None]
    align = align_corners and mode == "bilinear"
    return [axis_scale(shape[2], size[0], mode, align, f64, near64),
            axis_scale(shape[3], size[1], mode, align, f64, near64)]


def descriptor(shape: Shape, cl: bool, size: Sequence[int], mode: str, scaled: bool, shifted: bool, near64: bool,
               chunk_log2: int = 0) -> int:
    k = kind(shape, size, mode)
    return (k | (CL_BIT if cl else 0) | (SCALE_BIT if scaled else 0) | (SHIFT_BIT if shifted else 0)
            | (chunk_log2 << CHUNK_SHIFT) | (NEAR64_BIT if k == NEAREST and near64 else 0))


def pattern_key(inputs: Sequence[Tensor], size: Sequence[int], mode: str) -> str:
    """The tuning table's name for an input pattern (pattern_of)."""
    return pattern_of([x.shape for x in inputs], is_cl(inputs[0]), size, mode)


def pattern_of(shapes: Sequence[Shape], cl: bool, size: Sequence[int], mode: str) -> str:
    """The tuning table's name for an input pattern: the inputs' layout, then
    each input as D (same size) or U<f> (interpolated, f the nearest power
    of two to the upsampling factor, 0 when downsizing). The mode is not
    named: it changes a gather's loads, not the tiles that suit it."""
    parts = []
    for shape in shapes:
        if kind(shape, size, mode) == DIRECT:
            parts.append("D")
            continue
        ratio = max(int(size[0]) / max(int(shape[2]), 1), int(size[1]) / max(int(shape[3]), 1))
        parts.append("U" + str(0 if ratio < 1 else 1 << max(0, round(_log2(ratio)))))
    return ("cl:" if cl else "nchw:") + ".".join(parts)


def _log2(v: float) -> float:
    import math

    return math.log2(v)


def needs_int64(tensors: Sequence[Optional[Tensor]]) -> bool:
    """True when some flat offset could exceed int32 (the kernels address
    contiguous tensors, so the element count bounds every offset)."""
    return any(t is not None and t.numel() >= 2**31 - 1 for t in tensors)
