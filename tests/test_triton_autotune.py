"""The Triton kernels' autotuning setup, checked without a GPU.

The autotuner runs every candidate config on the caller's real buffers
before the chosen one. The backward writes per-program partial sums, and a
config with larger pixel blocks writes fewer rows, so the buffers must be
zeroed before each run (a GPU run found scale gradients off by 50 % on the
first, tuning call when they were not). tests/gpu/test_triton_gpu.py checks
the numbers on a GPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton")

from hrnet_fast.triton import backward, config  # noqa: E402

pytestmark = pytest.mark.skipif(config.INTERPRET, reason="the interpreter runs one fixed config, untuned")


def test_backward_zeroes_its_partial_sums_before_every_config():
    kernel = backward.exchange_bwd_kernel
    assert isinstance(kernel, triton.runtime.Autotuner)
    assert set(kernel.reset_to_zero) == {"psum_g_ptr", "psum_gx_ptr"}
    # Configs really differ in pixel block, so they write different row counts.
    assert len({c.kwargs["BLOCK_P"] for c in kernel.configs}) > 1
    assert backward.MIN_BLOCK_P == min(c.kwargs["BLOCK_P"] for c in kernel.configs)



def test_autotune_off_keeps_one_config_per_shape():
    # HRNET_FAST_TRITON_AUTOTUNE=0 (gpu_check's correctness tests): every
    # kernel compiles one config per shape instead of tuning seven. Read at
    # import, so checked in a fresh interpreter.
    code = textwrap.dedent("""
        from hrnet_fast.triton import backward, config, conv_kernel, forward
        assert not config.AUTOTUNE
        for kernel in (forward.exchange_fwd_kernel, backward.exchange_bwd_kernel,
                       conv_kernel.exchange_conv_fwd_kernel):
            for layout in (0, 1):
                kept = kernel.early_config_prune(kernel.configs, {"C": 48, "CL": layout})
                assert len(kept) == 1, (kernel, layout, kept)
                assert kept[0] in config.prune_tiles(kernel.configs, {"C": 48, "CL": layout})
        assert backward.exchange_bwd_kernel.reset_to_zero
    """)
    env = dict(os.environ, HRNET_FAST_TRITON_AUTOTUNE="0")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
