"""`convert(model)`: route the exchange step of every HRNet module in a model
through `hrnet_fast.exchange`, in place, changing nothing else.

    layers.py    predicates on the exchange's layers (BN modes, hooks)
    layouts.py   which modules are HRNet modules; their fuse layers read
                 into terms, and how their layouts resize
    terms.py     the summands of each output row: the general path
    folding.py   BN folded into its conv, and the cache of those folds
    module.py    FusedExchange: the terms, the settings and which path a
                 call takes (its eval programs live in hrnet_fast.plan)

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
from torch import Tensor

from ..backend import check_name
from ..contract import MODES
from ..memory import MEMORY, install as install_memory, unwrapped
from .layouts import is_hr_module, run_branches, writes_branches_back
from .module import FusedExchange


class HostForward:
    """A converted host's forward, set on the instance (type(host) and its
    class stay untouched): its branches as its own forward runs them
    (layouts.run_branches), then its FusedExchange."""

    def __init__(self, host: nn.Module, writes_back: bool):
        self.host = host
        self.writes_back = writes_back

    def __call__(self, x: List[Tensor]) -> List[Tensor]:
        host = self.host
        return host.fused_exchange(run_branches(host.branches, x, self.writes_back))


def _is_converted(m: nn.Module) -> bool:
    return isinstance(getattr(m, "fused_exchange", None), FusedExchange) and isinstance(unwrapped(m), HostForward)


def _check_arguments(model, backend: str, mode: Optional[str], align_corners, memory) -> None:
    """Bad arguments fail here, not at the first forward."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"hrnet_fast.convert: expected an nn.Module, got {type(model).__name__}")
    check_name("hrnet_fast.convert", backend)
    if mode is not None and mode not in MODES:
        raise ValueError(f"hrnet_fast.convert: mode must be one of {MODES}, got {mode!r}")
    if align_corners is not None and not isinstance(align_corners, bool):
        raise TypeError(f"hrnet_fast.convert: align_corners must be None or a bool, got {align_corners!r}")
    if memory not in MEMORY:
        raise ValueError(f"hrnet_fast.convert: memory must be one of {MEMORY}, got {memory!r}")


def convert(model: nn.Module, mode: Optional[str] = None, align_corners: Optional[bool] = None,
            backend: str = "auto", memory: Optional[str] = None) -> nn.Module:
    """Convert every multi-branch HRNet module of `model` in place to run its
    exchange through `hrnet_fast.exchange`; returns `model`.

    Parameters, buffers, state_dict keys and type(model) are unchanged.
    Converting again changes nothing but drops the cached BatchNorm folds:
    do it after editing weights through `.data`, which PyTorch's version
    counters (and so the cache) do not see.

    Args:
        mode, align_corners: the coarse branches' interpolation, for layouts
            whose own modules do not say it (hrnet_fast.convert.layouts).
        backend: the exchange backend ("auto", "reference", "cpu", "cuda",
            "triton"); a named backend must be able to run on this machine.
        memory: what training keeps for backward (hrnet_fast.memory): None
            (as eager), "lean" (BatchNorm, ReLU, add and exchange outputs
            recomputed from the convolution outputs), "checkpoint" (lean,
            and each HRNet module, layer1 and transition recomputed from its
            inputs); the same gradients and running statistics either way.

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
    _check_arguments(model, backend, mode, align_corners, memory)
    hosts = []
    for name, m in list(model.named_modules()):
        if not is_hr_module(m):
            continue
        hosts.append(m)
        if _is_converted(m):
            m.fused_exchange.clear_cache()
            continue
        where = f"{name} ({type(m).__name__})" if name else type(m).__name__
        m.fused_exchange = FusedExchange(m, mode, align_corners, backend, where)
        m.forward = HostForward(m, writes_branches_back(m))
    if not hosts:
        raise ValueError(f"hrnet_fast.convert: {type(model).__name__} contains no HRNet module (a module with "
                         f"branches or Lite-HRNet's layers, num_branches > 1 and fuse_layers); nothing to convert")
    install_memory(model, hosts, memory)
    return model


def fused_modules(model: nn.Module) -> List[nn.Module]:
    """The HRNet modules of `model` that run the fused exchange.

    Example:
        >>> import hrnet_fast
        >>> hrnet_fast.fused_modules(hrnet_fast.models.create("w18_small_v1", "pose"))
        []
    """
    return [m for m in model.modules() if _is_converted(m)]


__all__ = ["FusedExchange", "HostForward", "convert", "fused_modules"]
