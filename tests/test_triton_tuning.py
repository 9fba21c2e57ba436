"""The Triton backend without a GPU: launch configurations (shipped table,
heuristic, forced overrides, opt-in autotuning), the exact interpolation
scales handed to the kernels, and the op's fake path on fake CUDA tensors
with conv terms and for the backward op (test_contract: one custom op per
forward call, no ATen op, and no device access).
tests/gpu/test_triton_gpu.py checks the numbers and the launches on a GPU.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")

import hrnet_fast  # noqa: E402
from hrnet_fast.triton import slots, tuning  # noqa: E402
from fake_cuda import OpCounter, fake_cuda  # noqa: E402,F401  (the fixture)
from hrnet_fast.contract import saved_layout  # noqa: E402

pytestmark = pytest.mark.skipif(tuning.INTERPRET, reason="checks the compiled configuration, not the interpreter's")
META = torch.device("meta")


def _t(*shape, dtype=torch.bfloat16, cl=True):
    t = torch.empty(shape, dtype=dtype, device=META)
    return t.contiguous(memory_format=torch.channels_last) if cl else t


# ---- configurations ----------------------------------------------------------

def test_table_entries_are_well_formed():
    for key, cfg in tuning.TABLE.items():
        kernel, dtype, channels, bucket, pattern = key.split("|", 4)
        assert kernel in tuning.KERNELS and dtype in tuning.DTYPES.values() and bucket in "SML"
        assert int(channels) > 0 and pattern
        assert cfg["num_warps"] in (1, 2, 4, 8) and cfg["num_stages"] >= 1
        for name, v in cfg.items():
            if name.startswith("BLOCK_"):
                assert v & (v - 1) == 0, (key, name, v)  # powers of two
        if kernel == "conv":
            assert cfg["BLOCK_M"] >= 16 and cfg["BLOCK_N"] >= 16 and cfg["BLOCK_K"] >= 16


def test_a_table_entry_wins_over_the_heuristic(monkeypatch):
    out = _t(8, 48, 128, 256)
    inputs = [out, _t(8, 48, 64, 128)]
    key = tuning.key("fwd", out.dtype, 48, 8 * 128 * 256, slots.pattern_key(inputs, (128, 256), "bilinear"))
    assert key == "fwd|bf16|48|L|cl:D.U2"
    monkeypatch.setitem(tuning.TABLE, key, {"BLOCK_P": 32, "BLOCK_C": 16, "num_warps": 8, "num_stages": 1})
    assert tuning.forward_config(out, inputs, (128, 256), "bilinear")["num_warps"] == 8
    # Another size bucket: the heuristic.
    small = _t(1, 48, 32, 32)
    assert tuning.forward_config(small, [small, _t(1, 48, 16, 16)], (32, 32), "bilinear") == \
        tuning.forward_heuristic(torch.bfloat16, 48, True, 1)


def test_forced_overrides_merge_and_restore():
    out = _t(2, 18, 16, 16, cl=False)
    before = tuning.forward_config(out, [out], (16, 16), "nearest")
    with tuning.forced("fwd", {"BLOCK_P": 32}):
        cfg = tuning.forward_config(out, [out], (16, 16), "nearest")
        assert cfg["BLOCK_P"] == 32 and cfg["BLOCK_C"] == before["BLOCK_C"]
    assert tuning.forward_config(out, [out], (16, 16), "nearest") == before


@pytest.mark.parametrize("c_out,cins,block_k", [(36, [18], 32), (192, [48, 96], 16), (256, [32, 64, 128], 32),
                                                (384, [48, 96, 192], 16), (144, [18, 36, 72], 16)])
def test_conv_block_k_pads_the_channel_counts_least(c_out, cins, block_k):
    assert tuning.conv_block_k(cins, torch.bfloat16) == block_k
    assert tuning.conv_block_k(cins, torch.float32) in (16, 32)


def test_every_heuristic_block_shape_is_a_power_of_two():
    for dtype in tuning.DTYPES:
        for c in (1, 2, 3, 5, 18, 36, 48, 72, 144, 384, 1000):
            for cl in (False, True):
                for cfg in (tuning.forward_heuristic(dtype, c, cl, 2), tuning.rows_heuristic(dtype, c, cl),
                            tuning.cols_heuristic(dtype, c, cl)):
                    assert all(v & (v - 1) == 0 for k, v in cfg.items() if k.startswith("BLOCK_")), cfg
        if dtype != torch.float64:
            cfg = tuning.conv_heuristic(dtype, 72, [18, 36], 1 << 16, 2)
            assert cfg["BLOCK_N"] >= 16 and not cfg["EARLY"]


def test_pattern_keys():
    size = (15, 9)
    xs = [_t(1, 4, 15, 9, cl=False), _t(1, 4, 8, 5, cl=False), _t(1, 4, 4, 3, cl=False), _t(1, 4, 30, 18, cl=False)]
    assert slots.pattern_key(xs, size, "bilinear") == "nchw:D.U2.U4.U0"
    assert slots.pattern_key(xs[:2], size, "nearest") == "nchw:D.U2"


def test_autotuning_is_opt_in():
    # Read at import, so checked in fresh interpreters.
    code = textwrap.dedent("""
        from hrnet_fast.triton import tuning
        print(tuning.AUTOTUNE)
    """)
    for value, expect in ((None, "False"), ("0", "False"), ("1", "True")):
        env = dict(os.environ)
        env.pop("TRITON_INTERPRET", None)
        env.pop("HRNET_FAST_TRITON_AUTOTUNE", None)
        if value is not None:
            env["HRNET_FAST_TRITON_AUTOTUNE"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == expect


def test_opt_in_autotuner_wraps_the_same_kernel_with_the_candidates():
    from hrnet_fast.triton import forward

    tuner = tuning.autotuner("fwd", forward.exchange_fwd_kernel, ["N", "H", "W"], torch.bfloat16, 48, True)
    assert isinstance(tuner, triton.runtime.Autotuner) and tuner.fn is forward.exchange_fwd_kernel
    assert len(tuner.configs) == len(tuning.candidates("fwd", torch.bfloat16, 48, True)) > 1
    assert tuning.autotuner("fwd", forward.exchange_fwd_kernel, ["N", "H", "W"], torch.bfloat16, 48, True) is tuner


# ---- exact scales ------------------------------------------------------------

@pytest.mark.parametrize("n_in,n_out", [(1, 1), (3, 5), (8, 15), (17, 33), (5, 9), (26, 25), (64, 128), (7, 1)])
def test_axis_scales_are_atens(n_in, n_out):
    f32 = np.float32
    assert slots.axis_scale(n_in, n_out, "nearest", False, False) == float(f32(n_in) / f32(n_out))
    assert slots.axis_scale(n_in, n_out, "nearest", False, True) == float(f32(n_in) / f32(n_out))
    assert slots.axis_scale(n_in, n_out, "bilinear", False, False) == float(f32(n_in) / f32(n_out))
    want = float(f32(n_in - 1) / f32(n_out - 1)) if n_out > 1 else 0.0
    assert slots.axis_scale(n_in, n_out, "bilinear", True, False) == want
    bits = slots.axis_scale(n_in, n_out, "bilinear", True, True)
    assert struct.unpack("<d", struct.pack("<q", bits))[0] == ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)


# ---- the fake path: one op, no device ----------------------------------------

def test_conv_terms_dispatch_one_op_on_fake_cuda(fake_cuda):
    x = torch.randn(2, 36, 8, 8, device="cuda").to(memory_format=torch.channels_last)
    a = torch.randn(2, 18, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    w = torch.randn(36, 18, 3, 3, device="cuda").to(memory_format=torch.channels_last)
    b = torch.randn(36, device="cuda")
    with OpCounter() as counter:
        y = hrnet_fast.exchange([x], convs=[(a, w, b)], backend="triton")
    assert counter.ops == ["hrnet_fast.exchange_triton.default"]
    assert tuple(y.shape) == (2, 36, 8, 8) and y.is_contiguous(memory_format=torch.channels_last)


def test_backward_op_fake_path_on_fake_cuda(fake_cuda):
    # Called directly: autograd itself cannot record a graph on fake CUDA
    # tensors without a driver (torch aborts setting up device assertions).
    xs = [torch.randn(2, 8, 16, 12, device="cuda"), torch.randn(2, 8, 8, 6, device="cuda"),
          torch.randn(2, 8, 16, 12, device="cuda")]
    s = torch.rand(8, device="cuda")
    out = torch.randn(2, 8, 16, 12, device="cuda")
    a = torch.randn(2, 5, 31, 24, device="cuda")
    w = torch.randn(8, 5, 3, 3, device="cuda")
    # What autograd passes: only the input that has a scale.
    gi, gs, gb, ga, gw = torch.ops.hrnet_fast.exchange_triton_backward(
        torch.randn_like(out), out, [None, xs[1], None], *saved_layout(xs), [s], [1], [a], [w], "bilinear", True,
        True)
    assert [tuple(g.shape) for g in gi] == [tuple(x.shape) for x in xs]
    assert tuple(gs.shape) == (1, 8) and tuple(gb.shape) == (8,)
    assert tuple(ga[0].shape) == tuple(a.shape) and tuple(gw[0].shape) == tuple(w.shape)
