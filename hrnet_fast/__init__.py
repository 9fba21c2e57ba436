"""hrnet_fast: fused multi-resolution exchange kernels for HRNet.

Example:
    >>> import torch, hrnet_fast
    >>> x0, x1 = torch.randn(1, 18, 64, 48), torch.randn(1, 18, 32, 24)
    >>> hrnet_fast.exchange([x0, x1]).shape
    torch.Size([1, 18, 64, 48])
"""
from . import models, reference
from ._ext import build_info
from .convert import FusedExchange, convert, fused_modules
from .ops import backends, exchange
from .optimize import OptimizedModule, StaleSourceError, optimize

__all__ = ["exchange", "reference", "backends", "build_info", "models", "convert", "fused_modules",
           "FusedExchange", "optimize", "OptimizedModule", "StaleSourceError"]
__version__ = "0.1.0"
