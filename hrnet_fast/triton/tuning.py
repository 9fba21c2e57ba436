"""Launch configurations: a shipped table, a heuristic, no timing on a call.

A kernel's block shape is looked up, in order, in
  1. `forced` overrides (tests and benchmarks/tune_triton.py set them),
  2. the shipped table (tuning_table.py, regenerated on a GPU by
     benchmarks/tune_triton.py), keyed by
        kernel | dtype | channels | size bucket | input pattern,
  3. a heuristic from the same facts.
So the first call of a shape compiles one kernel and times nothing.
HRNET_FAST_TRITON_AUTOTUNE=1 opts the forward and conv kernels into
triton.autotune over `candidates(...)` instead (seconds per new shape); the
backward kernels always take the table, because their partial-sum rows
depend on the block shape.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, List, Optional, Sequence

import torch
import triton
from torch import Tensor

from . import slots
from .tuning_table import TABLE

# Read once, like triton itself: the interpreter is chosen at import time.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
AUTOTUNE = os.environ.get("HRNET_FAST_TRITON_AUTOTUNE", "0") == "1" and not INTERPRET

KERNELS = ("fwd", "bwd_rows", "bwd_cols", "bwd_reduce", "conv")
DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64"}

# Interpreter: tiles of up to this many elements (it runs programs one by
# one in Python, each op costing about the same whatever the tile size).
INTERP_ELEMS = 4096

_forced: Dict[str, dict] = {}


@contextlib.contextmanager
def forced(kernel: str, config: dict) -> Iterator[None]:
    """Use `config` (merged over whatever would be chosen) for `kernel`
    inside the block: how tests reach masked tails and multi-chunk loops,
    and how the tuning script times candidates."""
    assert kernel in KERNELS, kernel
    prev = _forced.get(kernel)
    _forced[kernel] = dict(config)
    try:
        yield
    finally:
        if prev is None:
            _forced.pop(kernel, None)
        else:
            _forced[kernel] = prev


def size_bucket(pixels: int) -> str:
    """S (< 2^14 output pixels, N * H * W), M (< 2^18) or L."""
    return "S" if pixels < 2**14 else ("M" if pixels < 2**18 else "L")


def key(kernel: str, dtype: torch.dtype, channels: int, pixels: int, pattern: str) -> str:
    return f"{kernel}|{DTYPES[dtype]}|{int(channels)}|{size_bucket(int(pixels))}|{pattern}"


def _choose(kernel: str, table_key: str, heuristic: dict, interpret: Optional[dict] = None) -> dict:
    if INTERPRET and interpret is not None:
        cfg = dict(interpret)
    else:
        cfg = dict(TABLE.get(table_key, heuristic))
    cfg.update(_forced.get(kernel, {}))
    cfg.setdefault("num_warps", 4)
    cfg.setdefault("num_stages", 1)
    return cfg


def _p2(v: int) -> int:
    return triton.next_power_of_2(max(int(v), 1))


def _budget(dtype: torch.dtype) -> int:
    """Elements per program a tile may hold: register room for the
    accumulators and the loaded tiles of four slots at 4 warps."""
    return {torch.float64: 512, torch.float32: 1024}.get(dtype, 2048)


# ---- exchange forward -------------------------------------------------------

def forward_heuristic(dtype: torch.dtype, channels: int, cl: bool, n_bilinear: int) -> dict:
    budget = _budget(dtype) // (2 if n_bilinear >= 2 else 1)
    if cl:
        block_c = min(_p2(channels), 64)
    else:
        block_c = min(_p2(channels), 4)
    return {"BLOCK_P": max(budget // block_c, 16), "BLOCK_C": block_c, "num_warps": 4, "num_stages": 1}


def forward_config(out: Tensor, inputs: Sequence[Tensor], size: Sequence[int], mode: str) -> dict:
    n_bil = sum(slots.kind(x.shape, size, mode) == slots.BILINEAR for x in inputs[:4])
    k = key("fwd", out.dtype, out.shape[1], out.shape[0] * size[0] * size[1], slots.pattern_key(inputs, size, mode))
    ch, pixels = _p2(out.shape[1]), _p2(size[0] * size[1] * (out.shape[0] if slots.is_cl(out) else 1))
    interp = {"BLOCK_P": min(pixels, max(INTERP_ELEMS // ch, 1)), "BLOCK_C": ch}
    return _choose("fwd", k, forward_heuristic(out.dtype, out.shape[1], slots.is_cl(out), n_bil), interp)


# ---- exchange backward ------------------------------------------------------

def rows_heuristic(dtype: torch.dtype, channels: int, cl: bool) -> dict:
    """Bands of one output row walked in BLOCK_W-column blocks: taller bands
    made ptxas spill the running sums around the W pass's inner loops."""
    budget = _budget(dtype) // 2
    block_c = min(_p2(channels), 64) if cl else min(_p2(channels), 4)
    return {"BLOCK_H": 1, "BLOCK_W": max(budget // block_c, 8), "BLOCK_C": block_c, "num_warps": 4,
            "num_stages": 1}


def cols_heuristic(dtype: torch.dtype, channels: int, cl: bool) -> dict:
    """Bands of one source row walked in BLOCK_W-column blocks, half the
    rows kernel's tile (its main operand is the float32 W-pass intermediate;
    spill-free in every variant aot_check compiles, the rows kernel's size
    was not)."""
    budget = _budget(dtype) // 4
    block_c = min(_p2(channels), 64) if cl else min(_p2(channels), 4)
    return {"BLOCK_H": 1, "BLOCK_W": max(budget // block_c, 1), "BLOCK_C": block_c, "num_warps": 4,
            "num_stages": 1}


def backward_configs(grad: Tensor, shapes: Sequence[Sequence[int]], size: Sequence[int], mode: str) -> List[dict]:
    """(rows, cols, reduce) configurations for one backward call with inputs
    of `shapes` (cols None when no input is interpolated)."""
    cl = slots.is_cl(grad)
    pattern = slots.pattern_of(shapes, cl, size, mode)
    pixels = grad.shape[0] * size[0] * size[1]
    ch = grad.shape[1]
    # Interpreter: whole planes per program (it runs programs one by one).
    w_all = _p2(max([size[1]] + [s[3] for s in shapes]))
    h_all = _p2(max([size[0]] + [s[2] for s in shapes]))
    interp = {"BLOCK_H": min(h_all, max(INTERP_ELEMS // (w_all * _p2(ch)), 1)), "BLOCK_W": w_all, "BLOCK_C": _p2(ch)}
    rows = _choose("bwd_rows", key("bwd_rows", grad.dtype, ch, pixels, pattern), rows_heuristic(grad.dtype, ch, cl),
                   interp)
    cols = None  # no H pass without an interpolated input
    if "U" in pattern:
        cols = _choose("bwd_cols", key("bwd_cols", grad.dtype, ch, pixels, pattern),
                       cols_heuristic(grad.dtype, ch, cl), interp)
    red = _choose("bwd_reduce", key("bwd_reduce", grad.dtype, ch, pixels, pattern),
                  {"BLOCK_R": 32, "BLOCK_C": min(_p2(ch), 64), "num_warps": 4, "num_stages": 1},
                  {"BLOCK_R": 64, "BLOCK_C": _p2(ch)})
    return [rows, cols, red]


def chunk_log2(block_w: int, w_in: int, w_out: int) -> int:
    """log2 of the W pass's source-column chunk: about the columns one
    BLOCK_W-wide output block owns (its loop takes any excess). A rows
    configuration may fix it as CHUNK_LOG2."""
    owned = -(-block_w * int(w_in) // int(w_out))
    return min(_p2(owned), 2 * block_w).bit_length() - 1


# ---- conv-term kernel -------------------------------------------------------

def conv_block_k(cins: Sequence[int], dtype: torch.dtype) -> int:
    """The reduction block that pads the channel counts least (ties to the
    larger block: fewer iterations); 16 is tl.dot's smallest K for 16-bit
    operands, and float32 (TF32) stays at 32 for shared memory."""
    options = (16, 32) if dtype == torch.float32 else (16, 32, 64)
    return min(options, key=lambda bk: (sum(-(-c // bk) * bk for c in cins), -bk))


def conv_heuristic(dtype: torch.dtype, c_out: int, cins: Sequence[int], pixels: int, n_coarse: int,
                   a_cl: bool = True) -> dict:
    """From register counts compiled for sm_90 (aot_check): the gathers of
    interpolated epilogue terms cost the most registers (bilinear: four
    taps of the whole tile). Without them 128 x 128 tiles fit (<= 131 at 8
    warps); with one, 128 x 64 with the terms before the K loop (<= 165);
    with two or more, 128 x 64 with the terms after it (<= 210). NCHW conv
    inputs have no contiguous channel runs, so their tiles cannot be copied
    asynchronously and each pipeline stage holds registers: 8 warps, 2
    stages."""
    block_m = 128 if pixels >= 8192 else 64
    block_n = min(max(_p2(c_out), 16), 128 if n_coarse == 0 and block_m == 128 else 64)
    warps = 8 if block_m == 128 or not a_cl else 4
    stages = 2 if not a_cl else (3 if dtype == torch.float32 else 4)
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": conv_block_k(cins, dtype),
            "EARLY": n_coarse <= 1, "num_warps": warps, "num_stages": stages}


def conv_pattern(inputs: Sequence[Tensor], conv_inputs: Sequence[Tensor], size: Sequence[int], mode: str) -> str:
    return slots.pattern_key(inputs, size, mode) + "|conv" + ",".join(str(int(a.shape[1])) for a in conv_inputs)


def conv_config(out: Tensor, inputs: Sequence[Tensor], conv_inputs: Sequence[Tensor], size: Sequence[int],
                mode: str) -> dict:
    pixels = out.shape[0] * size[0] * size[1]
    cins = [int(a.shape[1]) for a in conv_inputs]
    k = key("conv", out.dtype, out.shape[1], pixels, conv_pattern(inputs, conv_inputs, size, mode))
    n_coarse = sum(slots.kind(x.shape, size, mode) != slots.DIRECT for x in inputs)
    interp = {"BLOCK_M": min(_p2(pixels), 256), "BLOCK_N": max(_p2(out.shape[1]), 16),
              "BLOCK_K": conv_block_k(cins, out.dtype), "EARLY": n_coarse <= 1}
    heuristic = conv_heuristic(out.dtype, out.shape[1], cins, pixels, n_coarse, slots.is_cl(conv_inputs[0]))
    return _choose("conv", k, heuristic, interp)


# ---- candidates (opt-in autotuning, the tuning script) ----------------------

def candidates(kernel: str, dtype: torch.dtype, channels: int, cl: bool,
               cins: Optional[Sequence[int]] = None) -> List[dict]:
    """Block shapes worth timing for one kernel and call family."""
    out: List[dict] = []
    ch = _p2(channels)
    if kernel == "fwd":
        for block_c in sorted({min(ch, 16), min(ch, 32), min(ch, 64), min(ch, 128)} if cl else {1, 2, 4, 8}):
            for elems in (512, 1024, 2048, 4096):
                for warps in (4, 8):
                    if elems // block_c >= 16 and elems >= 32 * warps:
                        out.append({"BLOCK_P": elems // block_c, "BLOCK_C": block_c, "num_warps": warps,
                                    "num_stages": 1})
    elif kernel in ("bwd_rows", "bwd_cols"):
        for block_c in sorted({min(ch, 16), min(ch, 32), min(ch, 64)} if cl else {2, 4, 8}):
            for block_w in ((4, 8, 16) if cl else (32, 64)):
                for block_h in (1, 2, 4):
                    if block_h * block_w * block_c <= 4096:
                        out.append({"BLOCK_H": block_h, "BLOCK_W": block_w, "BLOCK_C": block_c, "num_warps": 4,
                                    "num_stages": 1})
    elif kernel == "bwd_reduce":
        out = [{"BLOCK_R": r, "BLOCK_C": min(ch, 64), "num_warps": 4, "num_stages": 1} for r in (16, 32, 64)]
    else:
        ks = {conv_block_k(cins or [channels], dtype)} | ({16, 32} if dtype == torch.float32 else {16, 32, 64})
        for block_m in (64, 128):
            for block_n in sorted({min(max(ch, 16), 32), min(max(ch, 16), 64), min(max(ch, 16), 128)}):
                for block_k in sorted(ks):
                    for stages in (3, 4):
                        for early in (True, False):
                            out.append({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k,
                                        "EARLY": early, "num_warps": 8 if block_m == 128 else 4,
                                        "num_stages": stages})
    return out


_autotuners: Dict[tuple, object] = {}


def _quick_bench(kernel_call, quantiles):
    """The autotuner's timer with shorter windows than Triton's default:
    these kernels run for microseconds, so 20 ms still times hundreds of calls."""
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


def autotuner(kernel: str, fn, keys: List[str], dtype: torch.dtype, channels: int, cl: bool,
              cins: Optional[Sequence[int]] = None):
    """Opt-in autotuning: one triton.autotune wrapper of `fn` per call family
    (kernel, dtype, channels, layout, conv channels), timing `candidates`
    on the first call of each shape in `keys`."""
    family = (kernel, dtype, int(channels), bool(cl), tuple(cins or ()))
    tuner = _autotuners.get(family)
    if tuner is None:
        import triton.testing  # noqa: F401  (do_bench)

        configs = [triton.Config({k: v for k, v in c.items() if k.startswith("BLOCK_") or k == "EARLY"},
                                 num_warps=c["num_warps"], num_stages=c["num_stages"])
                   for c in candidates(kernel, dtype, channels, cl, cins)]
        tuner = triton.autotune(configs=configs, key=keys, do_bench=_quick_bench)(fn)
        _autotuners[family] = tuner
    return tuner
