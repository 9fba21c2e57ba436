"""Dispatch counting on fake CUDA tensors, no GPU needed: what one
exchange call sends to the dispatcher (test_contract, test_triton_tuning)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

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
