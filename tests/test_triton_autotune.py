"""The Triton kernels' autotuning setup, checked without a GPU.

The autotuner runs every candidate config on the caller's real buffers
before the chosen one. The backward writes per-program partial sums, and a
config with larger pixel blocks writes fewer rows, so the buffers must be
zeroed before each run (a GPU run found scale gradients off by 50 % on the
first, tuning call when they were not). tests/gpu/test_triton_gpu.py checks
the numbers on a GPU.
"""
from __future__ import annotations

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

