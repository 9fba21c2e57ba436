"""`convert(model)`: route the exchange step of every HRNet module in a model
through `hrnet_fast.exchange`, in place, changing nothing else.

Recognised: any module with `branches`, `num_branches` > 1 and `fuse_layers`
(a ModuleList of ModuleLists) -- timm's HighResolutionModule, this package's
models, the official HRNet repositories and mmpose/mmseg's HRModule.

How a layout upsamples the coarse branches:
- nn.Upsample children in the fuse layers (timm, pose repo): their mode;
- this package's HighResolutionModule: its `mode` / `align_corners`;
- the official segmentation repo (F.interpolate in forward, bilinear, the
  module-level ALIGN_CORNERS global of its source file);
- a module with an `align_corners` attribute and no nn.Upsample (mmseg):
  bilinear with that setting;
- otherwise `mode=` / `align_corners=` must be given.

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

import sys
from typing import List, Optional, Tuple

import torch.nn as nn

from .models.hrmodule import HighResolutionModule as _OwnModule
from .modules import DOWN, ID, OPAQUE, UP, FusedExchange, Term

_MODES = ("nearest", "bilinear")


def _is_hr_module(m: nn.Module) -> bool:
    fuse = getattr(m, "fuse_layers", None)
    num = getattr(m, "num_branches", None)
    return (isinstance(fuse, nn.ModuleList) and isinstance(num, int) and num > 1
            and isinstance(getattr(m, "branches", None), nn.ModuleList)
            and all(isinstance(row, nn.ModuleList) for row in fuse))


def _is_converted(m: nn.Module) -> bool:
    return isinstance(getattr(m, "fused_exchange", None), FusedExchange) and "forward" in m.__dict__


def _is_bn(m: Optional[nn.Module]) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _is_conv(m: Optional[nn.Module]) -> bool:
    return type(m) is nn.Conv2d and m.padding_mode == "zeros"


def _pair(v) -> Tuple[float, float]:
    return (v, v) if not isinstance(v, (tuple, list)) else (v[0], v[1])


def _upsample_spec(up: nn.Upsample):
    """(mode, align_corners, ("scale"|"size", (h, w)))."""
    spec = ("size", _pair(up.size)) if up.size is not None else ("scale", _pair(up.scale_factor))
    return up.mode, bool(up.align_corners), spec


def _up_term(layer: nn.Module, j: int):
    """A coarse-branch layer conv1x1 -> BN [-> Upsample]: (Term, upsample
    mode or None). None if the layer has another shape."""
    if not isinstance(layer, nn.Sequential) or len(layer) not in (2, 3):
        return None
    if not (_is_conv(layer[0]) and _is_bn(layer[1])):
        return None
    conv = layer[0]
    pointwise = (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
                 and conv.dilation == (1, 1) and conv.groups == 1)
    if len(layer) == 2:
        return Term(UP, j, pointwise=pointwise), None
    if not isinstance(layer[2], nn.Upsample):
        return None
    mode, align, spec = _upsample_spec(layer[2])
    return Term(UP, j, upsample=spec, pointwise=pointwise), (mode, align)


def _down_term(layer: nn.Module, j: int) -> Optional[Term]:
    """A finer-branch chain of (conv3x3 s2, BN[, ReLU]) links, ReLU on all
    but the last."""
    if not isinstance(layer, nn.Sequential) or len(layer) == 0:
        return None
    for k, link in enumerate(layer):
        last = k == len(layer) - 1
        if not isinstance(link, nn.Sequential) or len(link) != (2 if last else 3):
            return None
        if not (_is_conv(link[0]) and _is_bn(link[1])):
            return None
        if not last and not isinstance(link[2], nn.ReLU):
            return None
    conv = layer[-1][0]
    in_kernel = (conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (1, 1)
                 and conv.dilation == (1, 1) and conv.groups == 1)
    return Term(DOWN, j, in_kernel=in_kernel)


def _forward_interp(m: nn.Module, mode: Optional[str], align_corners: Optional[bool]):
    """How a module that interpolates inside forward does it, or None."""
    if mode is not None:
        return mode, bool(align_corners) if align_corners is not None else False
    if isinstance(m, _OwnModule):
        return m.mode, m.align_corners
    src = sys.modules.get(type(m).__module__)
    if src is not None and hasattr(src, "ALIGN_CORNERS"):
        # official segmentation repo: bilinear, align_corners from a global
        # the model constructor sets from its config
        ac = align_corners if align_corners is not None else src.ALIGN_CORNERS
        return "bilinear", bool(ac)
    if hasattr(m, "align_corners"):
        return "bilinear", bool(m.align_corners if align_corners is None else align_corners)
    return None


def _plan(m: nn.Module, mode: Optional[str], align_corners: Optional[bool]):
    """Terms per output row and the row's interpolation (mode, align)."""
    if mode is not None and mode not in _MODES:
        raise ValueError(f"hrnet_fast.convert: mode must be one of {_MODES}, got {mode!r}")
    plan: List[List[Term]] = []
    chosen: Optional[Tuple[str, bool]] = None
    # Without nn.Upsample children the host interpolates (size-based) in
    # forward, so an unrecognised coarse layer's output is resized by the op;
    # with them, a layer's output must already have the target size.
    in_forward = not any(isinstance(c, nn.Upsample) for c in m.fuse_layers.modules())
    opaque_up = None if in_forward else ("layer", (1.0, 1.0))
    for i, row in enumerate(m.fuse_layers):
        terms: List[Term] = []
        for j, layer in enumerate(row):
            if j == i:
                ok = layer is None or isinstance(layer, nn.Identity)
                terms.append(Term(ID, j) if ok else Term(OPAQUE, j))
                continue
            if j < i:
                terms.append(_down_term(layer, j) or Term(OPAQUE, j))
                continue
            parsed = _up_term(layer, j)
            if parsed is None:
                terms.append(Term(OPAQUE, j, upsample=opaque_up))
                continue
            term, up_mode = parsed
            if up_mode is None:
                up_mode = _forward_interp(m, mode, align_corners)
                if up_mode is None:
                    raise ValueError(f"hrnet_fast.convert: {type(m).__name__} upsamples inside its forward "
                                     f"and its mode is unknown; pass mode= and align_corners=")
            elif mode is not None and (up_mode[0] != mode or (align_corners is not None
                                                             and up_mode[1] != bool(align_corners))):
                raise ValueError(f"hrnet_fast.convert: mode={mode!r} conflicts with the module's "
                                 f"nn.Upsample(mode={up_mode[0]!r}, align_corners={up_mode[1]})")
            if up_mode[0] not in _MODES:
                terms.append(Term(OPAQUE, j, upsample=opaque_up))
                continue
            up_mode = (up_mode[0], up_mode[1] and up_mode[0] == "bilinear")
            if chosen is None:
                chosen = up_mode
            if up_mode != chosen:
                # one exchange call has one mode: run odd ones as modules
                terms.append(Term(OPAQUE, j, upsample=opaque_up))
                continue
            terms.append(term)
        if not any(t.kind == ID for t in terms):
            raise ValueError(f"hrnet_fast.convert: fuse_layers[{i}][{i}] of {type(m).__name__} is not an "
                             f"identity; this layout is not an HRNet exchange")
        plan.append(terms)
    if chosen is None:
        chosen = (mode or "nearest", bool(align_corners))
    return plan, chosen


def convert(model: nn.Module, *, backend: str = "auto", mode: Optional[str] = None,
            align_corners: Optional[bool] = None) -> nn.Module:
    """Convert every multi-branch HRNet module of `model` in place to run its
    exchange through `hrnet_fast.exchange`; returns `model`.

    Parameters, buffers, state_dict keys and type(model) are unchanged.
    Converting again changes nothing but drops the cached BatchNorm folds:
    do it after editing weights through `.data`, which PyTorch's version
    counters (and so the cache) do not see. Raises ValueError if the model
    holds no HRNet module.

    Example:
        >>> import hrnet_fast
        >>> m = hrnet_fast.convert(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=2))
        >>> len(hrnet_fast.fused_modules(m))
        3
    """
    found = 0
    for m in list(model.modules()):
        if not _is_hr_module(m):
            continue
        found += 1
        if _is_converted(m):
            m.fused_exchange.clear_cache()
            continue
        plan, (row_mode, row_align) = _plan(m, mode, align_corners)
        fused = FusedExchange(m, plan, row_mode, row_align, backend,
                              copy_branches_in_place=not isinstance(m, _OwnModule))
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
