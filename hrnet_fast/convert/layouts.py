"""Reading an HRNet module's exchange: which modules are HRNet modules, how
their fuse layers map onto terms (hrnet_fast.convert.terms), and how they
resize.

Recognised: any module with `branches`, `num_branches` > 1 and `fuse_layers`
(a ModuleList of ModuleLists) -- timm's HighResolutionModule, this package's
models, the official HRNet repositories (segmentation: both the HRNet-OCR and
pytorch-v1.1 branches; pose; classification) and mmseg / mmpose / mmdet's
HRModule.

How a layout resizes the coarse branches, read from the module itself:
- an upsampling module ending each coarse fuse layer: nn.Upsample (timm,
  pose, mmpose) or a module with `size` / `scale_factor`, `mode` and
  `align_corners` that resizes by F.interpolate (mmseg's Upsample);
- an F.interpolate / resize call in the module's forward (the official
  segmentation repository, mmseg), its mode and align_corners read from the
  call: literals, `self.<attr>`, or a global of the module's source file
  (the official repository's ALIGN_CORNERS);
- otherwise `mode=` / `align_corners=` must be given to convert.

A layout may also say itself how it runs, as this package's models do:
`resizes_in_forward` (a bool: whether forward resizes the coarse branches;
read instead of the forward's source) and `writes_branches_back` (False
when forward does not write the branch outputs back into the caller's list,
as timm and the official repositories do).
"""
from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from typing import List, Optional, Tuple

import torch.nn as nn
from torch import Tensor

from ..contract import MODES
from .layers import is_batchnorm, is_conv
from .terms import DownTerm, IdentityTerm, OpaqueTerm, Term, UpTerm, Upsample

_RESIZE_CALLS = ("interpolate", "resize", "upsample")


def is_hr_module(m: nn.Module) -> bool:
    fuse = getattr(m, "fuse_layers", None)
    num = getattr(m, "num_branches", None)
    return (isinstance(fuse, nn.ModuleList) and isinstance(num, int) and num > 1
            and isinstance(getattr(m, "branches", None), nn.ModuleList)
            and all(isinstance(row, nn.ModuleList) for row in fuse))


def _pair(v) -> Tuple[float, float]:
    return (v, v) if not isinstance(v, (tuple, list)) else (v[0], v[1])


def upsample_of(m: nn.Module) -> Optional[Upsample]:
    """The resize an upsampling module performs, or None when `m` is not one
    this package can reproduce."""
    if not all(hasattr(m, a) for a in ("size", "scale_factor", "mode", "align_corners")):
        return None
    if not isinstance(m, nn.Upsample) and type(m).__name__ != "Upsample":
        return None
    mode = m.mode
    if mode not in MODES:
        return Upsample(m, None, None, mode, False)
    size = _pair(m.size) if m.size else None
    scale = _pair(m.scale_factor) if m.scale_factor and not size else None
    if size is None and scale is None:
        return None
    return Upsample(m, size, scale, mode, bool(m.align_corners) and mode == "bilinear")


def _literal(node: ast.AST, host: nn.Module, globals_: dict):
    """The value of a call argument: a literal, self.<attr> or a module
    global; raises LookupError when it cannot be known before running."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in globals_:
        return globals_[node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
            and hasattr(host, node.attr):
        return getattr(host, node.attr)
    raise LookupError(ast.dump(node))


def forward_resize(m: nn.Module) -> Optional[Tuple[Optional[str], Optional[bool]]]:
    """How `m`'s forward resizes the coarse branches: (mode, align_corners),
    either None where the call does not say it in a way that can be read;
    None when forward makes no resize call (or has no readable source)."""
    try:
        source = textwrap.dedent(inspect.getsource(type(m).forward))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    globals_ = vars(sys.modules[type(m).__module__]) if type(m).__module__ in sys.modules else {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in _RESIZE_CALLS:
            continue
        args = {k.arg: k.value for k in node.keywords}
        # F.interpolate(input, size, scale_factor, mode, align_corners); mmseg's resize likewise
        for pos, key in ((3, "mode"), (4, "align_corners")):
            if key not in args and len(node.args) > pos:
                args[key] = node.args[pos]
        try:
            mode = _literal(args["mode"], m, globals_) if "mode" in args else "nearest"
        except LookupError:
            mode = None
        align: Optional[bool] = False  # F.interpolate's default
        if "align_corners" in args:
            try:
                align = bool(_literal(args["align_corners"], m, globals_))
            except LookupError:
                # The official repository reads its module global through an
                # expression: the global is the setting.
                align = bool(globals_["ALIGN_CORNERS"]) if "ALIGN_CORNERS" in globals_ else None
        return mode, align
    return None


def writes_branches_back(m: nn.Module) -> bool:
    """Whether `m`'s forward writes its branch outputs back into the list it
    was given (timm, the official repositories, mmseg / mmpose)."""
    return getattr(m, "writes_branches_back", True) is not False


def run_branches(branches: nn.ModuleList, x: List[Tensor], writes_back: bool) -> List[Tensor]:
    """The branch outputs an HRNet module's exchange takes, computed as its
    forward computes them: written back into the caller's list where the
    source does that; list entries past the last branch are left alone, as
    the source leaves them."""
    if writes_back:
        for i, branch in enumerate(branches):
            x[i] = branch(x[i])
        return x[:len(branches)]
    return [branch(t) for branch, t in zip(branches, x)]


def _host_resize(m: nn.Module, mode: Optional[str], align_corners: Optional[bool]):
    """(resizes in forward, (mode, align_corners) or None when unknown)."""
    found = forward_resize(m)
    declared = getattr(m, "resizes_in_forward", None)
    if isinstance(declared, bool) and not declared:
        found = None
    if found is None:
        return False, (mode, bool(align_corners)) if mode is not None else None
    f_mode, f_align = found
    chosen_mode = mode or f_mode
    chosen_align = bool(align_corners) if align_corners is not None else f_align
    if chosen_mode is None or chosen_align is None:
        return True, None
    return True, (chosen_mode, chosen_align)


def _up_layer(layer: nn.Module):
    """(conv, bn, upsample module or None) for conv -> BN [-> upsample], or
    None for any other layer."""
    if not isinstance(layer, nn.Sequential) or len(layer) not in (2, 3):
        return None
    if not (is_conv(layer[0]) and is_batchnorm(layer[1])):
        return None
    if len(layer) == 2:
        return layer[0], layer[1], None
    up = upsample_of(layer[2])
    return None if up is None else (layer[0], layer[1], up)


def _down_layer(layer: nn.Module) -> bool:
    """A chain of (conv stride 2, BN[, ReLU]) links, ReLU on all but the last."""
    if not isinstance(layer, nn.Sequential) or len(layer) == 0:
        return False
    for k, link in enumerate(layer):
        last = k == len(layer) - 1
        if not isinstance(link, nn.Sequential) or len(link) != (2 if last else 3):
            return False
        if not (is_conv(link[0]) and is_batchnorm(link[1])):
            return False
        if not last and not isinstance(link[2], nn.ReLU):
            return False
    return True


def read_terms(m: nn.Module, mode: Optional[str] = None, align_corners: Optional[bool] = None
               ) -> Tuple[List[List[Term]], Tuple[str, bool]]:
    """The terms of every output row of `m`'s exchange, and the rows'
    interpolation (mode, align_corners). Raises ValueError when the layout
    is not an exchange or its interpolation cannot be read."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"hrnet_fast.convert: mode must be one of {MODES}, got {mode!r}")
    resizes, host_mode = _host_resize(m, mode, align_corners)
    rows: List[List[Term]] = []
    chosen: Optional[Tuple[str, bool]] = None
    for i, row in enumerate(m.fuse_layers):
        terms: List[Term] = []
        for j, layer in enumerate(row):
            if j == i:
                ok = layer is None or isinstance(layer, nn.Identity)
                terms.append(IdentityTerm(i, j, None) if ok else OpaqueTerm(i, j, layer, False))
                continue
            if j < i:
                terms.append(DownTerm(i, j, layer) if _down_layer(layer) else OpaqueTerm(i, j, layer, False))
                continue
            parsed = _up_layer(layer)
            if parsed is None:
                terms.append(OpaqueTerm(i, j, layer, resizes))
                continue
            _conv, _bn, up = parsed
            if up is not None:
                up_mode = (up.mode, up.align_corners)
                if mode is not None and (up_mode[0] != mode or (align_corners is not None
                                                               and up_mode[1] != bool(align_corners))):
                    raise ValueError(f"hrnet_fast.convert: mode={mode!r} conflicts with the module's "
                                     f"{type(up.module).__name__}(mode={up_mode[0]!r}, align_corners={up_mode[1]})")
            elif host_mode is not None:
                up_mode = host_mode
            else:
                raise ValueError(f"hrnet_fast.convert: {type(m).__name__} resizes inside its forward in a way "
                                 f"that cannot be read; pass mode= and align_corners=")
            if up_mode[0] not in MODES:
                terms.append(OpaqueTerm(i, j, layer, resizes))
                continue
            up_mode = (up_mode[0], bool(up_mode[1]) and up_mode[0] == "bilinear")
            chosen = chosen or up_mode
            if up_mode != chosen:
                # one exchange call has one mode: an odd one runs as a module
                terms.append(OpaqueTerm(i, j, layer, resizes))
                continue
            terms.append(UpTerm(i, j, layer, up, resizes))
        if not any(isinstance(t, IdentityTerm) for t in terms):
            raise ValueError(f"hrnet_fast.convert: fuse_layers[{i}][{i}] of {type(m).__name__} is not an "
                             f"identity; this layout is not an HRNet exchange")
        rows.append(terms)
    if chosen is None:
        chosen = host_mode or (mode or "nearest", bool(align_corners))
    return rows, chosen
