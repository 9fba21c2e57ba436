"""What the build says about CUDA. Runs on CPU machines: a CUDA build must
report itself and its targets; a CPU-only build is skipped."""
from __future__ import annotations

import re

import pytest
import torch

import hrnet_fast

INFO = hrnet_fast.build_info()
needs_cuda_build = pytest.mark.skipif(not INFO["cuda_compiled"], reason="extension built without CUDA")


@needs_cuda_build
def test_cuda_build_reports_targets():
    archs = INFO["cuda_arch_list"]
    assert archs, "a CUDA build lists the architectures it compiled for"
    for arch in archs:
        assert re.fullmatch(r"\d+\.\d+a?(\+PTX)?", arch), arch


@needs_cuda_build
def test_cuda_kernels_registered():
    # The CUDA kernels are registered under the CUDA key of both ops.
    for op in ("hrnet_fast::exchange", "hrnet_fast::exchange_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op


@needs_cuda_build
def test_cuda_backend_usable_iff_device():
    assert hrnet_fast.backends()["cuda"] == torch.cuda.is_available()


def test_cpu_only_build_has_no_targets():
    if INFO["cuda_compiled"]:
        pytest.skip("extension built with CUDA")
    assert INFO["cuda_arch_list"] == []
    assert hrnet_fast.backends()["cuda"] is False
