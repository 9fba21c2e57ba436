"""`convert(model)`: route the exchange step of every HRNet module in a model
through `hrnet_fast.exchange`, in place, changing nothing else.

Which modules are HRNet modules and how their layouts resize is read by
hrnet_fast.layouts; each module's exchange is compiled once into terms held
by its FusedExchange (hrnet_fast.modules).

Example:
    >>> import torch, timm, hrnet_fast
    >>> m = timm.create_model("hrnet_w18_small", pretrained=False).eval()
    >>> x = torch.randn(1, 3, 64, 64)
    >>> with torch.no_grad():
    ...     before = m(x)
    ...     after = hrnet_fast.convert(m)(x)
    >>> torch.allclose(before, after, atol=1e-4, rtol=1e-4), len(hrnet_fast.fused_modules(m))
    (True, 3)
"""
from __future__ import annotations

from typing import List, Optional

import torch.nn as nn

from .backend import BACKENDS, BackendUnavailable, NAMES
from .contract import MODES
from .layouts import OwnModule, is_hr_module
from .modules import FusedExchange


def _is_converted(m: nn.Module) -> bool:
    return isinstance(getattr(m, "fused_exchange", None), FusedExchange) and "forward" in m.__dict__


def _check_arguments(model, backend: str, mode: Optional[str], align_corners) -> None:
    """Bad arguments fail here, not at the first forward."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"hrnet_fast.convert: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(backend, str) or (backend != "auto" and backend not in NAMES):
        raise ValueError(f"hrnet_fast.convert: unknown backend {backend!r}; expected one of {('auto',) + NAMES}")
    if backend != "auto":
        reason = BACKENDS[backend].unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"hrnet_fast.convert: backend {backend!r} is unavailable: {reason}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"hrnet_fast.convert: mode must be one of {MODES}, got {mode!r}")
    if align_corners is not None and not isinstance(align_corners, bool):
        raise TypeError(f"hrnet_fast.convert: align_corners must be None or a bool, got {align_corners!r}")


def convert(model: nn.Module, *, backend: str = "auto", mode: Optional[str] = None,
            align_corners: Optional[bool] = None) -> nn.Module:
    """Convert every multi-branch HRNet module of `model` in place to run its
    exchange through `hrnet_fast.exchange`; returns `model`.

    Parameters, buffers, state_dict keys and type(model) are unchanged.
    Converting again changes nothing but drops the cached BatchNorm folds:
    do it after editing weights through `.data`, which PyTorch's version
    counters (and so the cache) do not see.

    Args:
        backend: the exchange backend ("auto", "reference", "cpu", "cuda",
            "triton"); a named backend must be able to run on this machine.
        mode, align_corners: the coarse branches' interpolation, for layouts
            whose own modules do not say it (hrnet_fast.layouts).

    Raises:
        TypeError: `model` is not a module.
        ValueError: no HRNet module in `model`, an unknown backend or mode,
            or a layout whose interpolation cannot be read.
        RuntimeError: the named backend cannot run here.

    Example:
        >>> import hrnet_fast
        >>> m = hrnet_fast.convert(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=2))
        >>> len(hrnet_fast.fused_modules(m))
        3
    """
    _check_arguments(model, backend, mode, align_corners)
    found = 0
    for m in list(model.modules()):
        if not is_hr_module(m):
            continue
        found += 1
        if _is_converted(m):
            m.fused_exchange.clear_cache()
            continue
        fused = FusedExchange(m, mode, align_corners, backend, copy_branches_in_place=not isinstance(m, OwnModule))
        m.fused_exchange = fused
        # Instance attribute: nn.Module.__call__ finds it before the class's
        # forward, so type(m) and its class stay untouched.
        m.forward = fused.host_forward
    if not found:
        raise ValueError(f"hrnet_fast.convert: {type(model).__name__} contains no HRNet module (a module with "
                         f"branches, num_branches > 1 and fuse_layers); nothing to convert")
    return model


def fused_modules(model: nn.Module) -> List[nn.Module]:
    """The HRNet modules of `model` that run the fused exchange.

    Example:
        >>> import hrnet_fast
        >>> hrnet_fast.fused_modules(hrnet_fast.models.create("w18_small_v1", "pose"))
        []
    """
    return [m for m in model.modules() if _is_converted(m)]
