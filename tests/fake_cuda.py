"""Dispatch counting on fake CUDA tensors, no GPU needed: what one
exchange call sends to the dispatcher (test_contract, test_triton_tuning).
Import `fake_cuda` into a test module to use it as a fixture."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import hrnet_fast
from hrnet_fast import backend as backend_registry


class OpCounter(TorchDispatchMode):
    """Every op that reaches the Python dispatch key, by name."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@contextmanager
def fake_cuda_mode(monkeypatch) -> Iterator[FakeTensorMode]:
    """Fake CUDA tensors, with backends that believe a device is there (and
    no backend choice cached from before or kept for after)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backend_registry._CHOICES.clear()
    try:
        with FakeTensorMode() as mode:
            yield mode
    finally:
        backend_registry._CHOICES.clear()


@pytest.fixture
def fake_cuda(request, monkeypatch):
    """Fake CUDA tensors with a backend that believes a device is there;
    the backend ("cuda" or "triton", by indirect parametrization, else
    "triton") is the fixture's value. Skips where that backend's fake path
    cannot run: cuda without a CUDA build, triton without Triton or under
    its interpreter, either without the extension (no value checks)."""
    backend = getattr(request, "param", "triton")
    info = hrnet_fast.build_info()
    if not info["extension_loaded"]:
        pytest.skip("the extension is not built: no value checks to run")
    if backend == "cuda" and not info["cuda_compiled"]:
        pytest.skip("the extension was built without CUDA")
    if backend == "triton":
        pytest.importorskip("triton")
        from hrnet_fast.backend.triton import INTERPRET
        if INTERPRET:
            pytest.skip("the interpreter runs CPU tensors, not fake CUDA ones")
    with fake_cuda_mode(monkeypatch):
        yield backend
