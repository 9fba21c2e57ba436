"""Reading an HRNet module's exchange: which modules are HRNet modules, how
their fuse layers map onto terms (hrnet_fast.convert.terms), and how they
resize.

Recognised: any module with `branches`, `num_branches` > 1 and `fuse_layers`
(a ModuleList of ModuleLists) -- timm's HighResolutionModule, this package's
models, the official HRNet repositories (segmentation: both the HRNet-OCR and
pytorch-v1.1 branches; pose; classification) and mmseg / mmpose / mmdet's
HRModule -- and Lite-HRNet's LiteHRModule (mmpose's LiteHRNet backbone and
the Lite-HRNet repository), told by `layers`, `module_type` ("LITE" or
"NAIVE") and `with_fuse` in place of `branches`.

How a layout resizes the coarse branches, read from the module itself:
- an upsampling module ending each coarse fuse layer: nn.Upsample (timm,
  pose, mmpose, Lite-HRNet) or a module with `size` / `scale_factor`, `mode`
  and `align_corners` that resizes by F.interpolate (mmseg's Upsample);
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

Lite-HRNet's exchange is not HRNet's. Its forward starts row 0's sum from the
branch output out[0] itself and then adds out[0] again, in place, so that
row 0 is relu(2 x_0 + sum_j>0 up_j(x_j)) and out[0] is left holding that
sum before its ReLU, s_0; every later row i starts from
fuse_layers[i][0](s_0) and adds it once more in its loop from j = 0:

    s_0 = 2 x_0 + sum_{j>0} fuse_layers[0][j](x_j)      (in place in out[0])
    y_0 = relu(s_0)
    y_i = relu(2 fuse_layers[i][0](s_0) + x_i + sum_{j>0, j!=i} fuse_layers[i][j](x_j))

A converted LiteHRModule computes exactly that: outputs, gradients and
running statistics (fuse_layers[i][0] runs twice per row, so its BatchNorms
update twice, as in the source). The exchange call cannot hand out a row's
sum before its ReLU, and the eval program runs as one C++ call only when no
summand runs as a module, which the depthwise-separable down chains (not
HRNet's conv + BN links) would. So the module's branch step (`branches`: a
LiteBranchStep, an unregistered instance attribute set when its terms are
read; state_dict, parameters and named_modules are unchanged) runs, as the
source runs them, as modules:

- `layers`: "LITE" on the whole list, a new list; "NAIVE" per branch,
  written back into the caller's list;
- row 0's sum s_0, made in place in out[0] (a caller's list sees what it
  sees unconverted);
- every down chain fuse_layers[i][j], j < i, of the later rows; the one
  from branch 0 on s_0, twice per row;

and the FusedExchange takes [s_0, x_1, ..., x_{n-1}, those chains' outputs]:
row 0 is relu(s_0); every later row is one fused call summing the chains'
outputs and x_i as identity inputs and the coarser branches as folded up
terms (1x1 conv + BN + nearest upsample: the op resizes). Only the modules'
call order differs from the source's (the down chains run before the up
terms). A LiteHRModule with one branch or with_fuse=False has no exchange
and is left alone; with multiscale_output=False its one row is row 0.
`optimize` runs a LiteHRModule as it is (its branch step is not a list of
per-branch modules) and says so in its report.
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


def _has_exchange(m: nn.Module) -> bool:
    fuse = getattr(m, "fuse_layers", None)
    num = getattr(m, "num_branches", None)
    return (isinstance(fuse, nn.ModuleList) and isinstance(num, int) and num > 1
            and all(isinstance(row, nn.ModuleList) for row in fuse))


def is_lite_module(m: nn.Module) -> bool:
    """A Lite-HRNet LiteHRModule with an exchange: `layers`, `module_type`
    "LITE" / "NAIVE", `with_fuse` and fuse layers over two or more branches."""
    kind = getattr(m, "module_type", None)
    return (isinstance(kind, str) and kind.upper() in ("LITE", "NAIVE") and bool(getattr(m, "with_fuse", False))
            and isinstance(getattr(m, "layers", None), (nn.Sequential, nn.ModuleList)) and _has_exchange(m))


def is_hr_module(m: nn.Module) -> bool:
    return _has_exchange(m) and (isinstance(getattr(m, "branches", None), nn.ModuleList) or is_lite_module(m))


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
    was given (timm, the official repositories, mmseg / mmpose; Lite-HRNet's
    "NAIVE" modules, not its "LITE" ones)."""
    if is_lite_module(m):
        return m.module_type.upper() == "NAIVE"
    return getattr(m, "writes_branches_back", True) is not False


class LiteBranchStep:
    """A converted LiteHRModule's `branches`: its `layers`, row 0's sum
    before the ReLU (in place in out[0]) and the later rows' down chains,
    each as its forward runs them; returns [s_0, x_1, ..., x_{n-1}, the
    chains' outputs in `downs` order], what its FusedExchange takes (see the
    module doc). Not a list of per-branch modules: iterating it raises
    ValueError (so `optimize` runs the module as it is)."""

    def __init__(self, host: nn.Module, downs: List[Tuple[int, int]]):
        self.host = host
        self.downs = downs  # (row, branch) of each chain output, in order

    def __iter__(self):
        raise ValueError(f"{type(self.host).__name__} (Lite-HRNet) computes its branches, row 0's sum and its "
                         f"down chains in one step, not as a list of per-branch modules")

    def __call__(self, x: List[Tensor]) -> List[Tensor]:
        host = self.host
        n = host.num_branches
        if host.module_type.upper() == "LITE":
            out = host.layers(x)
        else:
            layers = host.layers
            for k in range(n):
                x[k] = layers[k](x[k])
            out = x
        fuse = host.fuse_layers
        s0 = out[0]
        s0 += s0  # the source's `y = out[0]; y += out[0]`: twice x_0, in place
        for j in range(1, n):
            s0 += fuse[0][j](out[j])
        # out[0] is s_0 now, as the source's later rows read it
        return [*out[:n], *(fuse[i][j](out[j]) for i, j in self.downs)]


def run_branches(branches: nn.ModuleList, x: List[Tensor], writes_back: bool) -> List[Tensor]:
    """The branch outputs an HRNet module's exchange takes, computed as its
    forward computes them: written back into the caller's list where the
    source does that; list entries past the last branch are left alone, as
    the source leaves them. A Lite-HRNet module's LiteBranchStep runs as
    itself."""
    if isinstance(branches, LiteBranchStep):
        return branches(x)
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
    if is_lite_module(m):
        rows = _lite_rows(m, rows)
    return rows, chosen


def _lite_rows(m: nn.Module, rows: List[List[Term]]) -> List[List[Term]]:
    """A LiteHRModule's rows over [s_0, x_1, ..., down chain outputs] (see
    the module doc): row 0 is s_0 alone (its other summands are in s_0
    already); a later row's down chains are identity inputs (the branch
    step computes them: fuse_layers[i][0] twice), its coarser branches stay
    as read. Sets the module's branch step."""
    n = m.num_branches
    downs: List[Tuple[int, int]] = []
    lite = [[t for t in rows[0] if isinstance(t, IdentityTerm)]]
    for i, row in enumerate(rows[1:], 1):
        terms: List[Term] = []
        for t in (row[0], *row):  # the source adds fuse_layers[i][0](s_0) twice
            if t.j < i:
                downs.append((i, t.j))
                terms.append(IdentityTerm(i, n + len(downs) - 1, None))
            else:
                terms.append(t)
        lite.append(terms)
    m.__dict__["branches"] = LiteBranchStep(m, downs)
    return lite
