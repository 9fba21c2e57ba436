"""Launch configuration shared by the kernels: interpreter detection, block
shapes, autotuning, and the host-side float32 scales of interp.h."""
from __future__ import annotations

import os
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
import triton
import triton.testing

# Read once, like triton itself: the interpreter is chosen at import time.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# HRNET_FAST_TRITON_AUTOTUNE=0: one config per shape (the first that suits
# the layout), compiled once and not timed. For correctness runs: tuning
# compiles and times up to seven configs per kernel variant and shape,
# seconds per new shape.
AUTOTUNE = os.environ.get("HRNET_FAST_TRITON_AUTOTUNE", "1") != "0"

# Interpreter: one fixed, small config (it runs programs one by one in
# Python, so fewer, larger programs are faster, and there is nothing to tune).
INTERP_BLOCK_P = 32
INTERP_BLOCK_C = 16

# Kernels index with int32 offsets unless a tensor could overflow them.
INT32_LIMIT = 2**31 - 1


def needs_int64(tensors: Sequence[torch.Tensor]) -> bool:
    """True when some offset could exceed int32: the furthest element of any
    tensor (by its strides, so views and expanded tensors count too)."""
    for t in tensors:
        if t.numel() == 0:
            continue
        reach = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
        if reach >= INT32_LIMIT or t.numel() >= INT32_LIMIT:
            return True
    return False


def axis_scales(n_in: int, n_out: int, align_corners: bool) -> Tuple[float, float]:
    """(nearest scale, bilinear scale) for one axis, in float32 exactly as
    ATen computes them, returned as Python floats holding float32 values (a
    float kernel argument is float32, so they arrive unchanged)."""
    # int() first: under dynamic-shape tracing these may be SymInts, which
    # numpy cannot take (int() specializes on the value, as it must here).
    n_in, n_out = int(n_in), int(n_out)
    f32 = np.float32
    nscale = f32(n_in) / f32(n_out)
    if align_corners:
        bscale = f32(n_in - 1) / f32(n_out - 1) if n_out > 1 else f32(0.0)
    else:
        bscale = f32(n_in) / f32(n_out)
    return float(nscale), float(bscale)


def search_steps(n_out: int) -> int:
    """Binary-search iterations that settle any range over [0, n_out]."""
    return max(int(n_out).bit_length(), 1)


def tile_configs(pairs: List[Tuple[int, int, int]]) -> List[triton.Config]:
    return [triton.Config({"BLOCK_P": p, "BLOCK_C": c}, num_warps=w) for p, c, w in pairs]


# Block shapes: wide channel blocks for channels_last (contiguous channel
# vectors), long pixel blocks for NCHW (contiguous rows); the autotuner picks.
FORWARD_CONFIGS = tile_configs([
    (64, 32, 4), (32, 64, 4), (128, 16, 4), (16, 128, 4),
    (256, 8, 4), (512, 4, 4), (128, 32, 8), (64, 64, 8),
])
# Small pixel blocks too: coarse inputs have few source pixels, each of which
# gathers many output pixels, so more (shorter) programs fill the GPU.
BACKWARD_CONFIGS = tile_configs([
    (64, 32, 4), (32, 64, 4), (128, 16, 4), (256, 8, 4), (128, 32, 8), (16, 32, 4), (16, 64, 4),
])


def prune_tiles(configs: List[triton.Config], named_args: dict, **kwargs) -> List[triton.Config]:
    """Keep only block shapes that suit the layout, so each new shape
    compiles and benchmarks a handful of configs rather than all of them:
    channels_last wants channel blocks of 16 up to the channel count;
    NCHW wants long pixel blocks and narrow channel blocks. Never empty."""
    channels = int(named_args["C"])
    widest = max(triton.next_power_of_2(channels), 16)
    if named_args.get("CL", 1):
        keep = [c for c in configs if 16 <= c.kwargs["BLOCK_C"] <= widest]
    else:
        keep = [c for c in configs if c.kwargs["BLOCK_C"] <= 16 and c.kwargs["BLOCK_P"] >= 128]
    return keep or list(configs[:1])


def _quick_bench(kernel_call: Callable[[], None], quantiles) -> List[float]:
    """The autotuner's timer with shorter windows than Triton's default
    (25 ms warm-up, 100 ms timed per config): a model has dozens of exchange
    shapes, each tuned on its first call, and these kernels run for
    microseconds, so 20 ms still times hundreds of calls."""
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


def maybe_autotune(configs: List[triton.Config], key: List[str], prune: bool = True,
                   reset_to_zero: Sequence[str] = ()) -> Callable:
    """triton.autotune (with layout-based pruning) outside the interpreter;
    identity under it. `reset_to_zero` names buffers a kernel only partly
    writes for some configs: the autotuner runs every config on the real
    arguments, so without the reset a config's leftovers would stay in the
    rows the chosen config does not write."""
    if INTERPRET:
        return lambda fn: fn
    if AUTOTUNE:
        pruner = prune_tiles if prune else None
    else:
        def pruner(cfgs, named_args, **kwargs):
            return (prune_tiles(cfgs, named_args, **kwargs) if prune else list(cfgs))[:1]
    return triton.autotune(configs=configs, key=key,
                           prune_configs_by={"early_config_prune": pruner} if pruner else None,
                           reset_to_zero=list(reset_to_zero) or None, do_bench=_quick_bench)


def fixed_meta() -> dict:
    """Meta-parameters passed explicitly when not autotuning."""
    return {"BLOCK_P": INTERP_BLOCK_P, "BLOCK_C": INTERP_BLOCK_C} if INTERPRET else {}
