"""FusedExchange: runs an HRNet module's exchange step through
`hrnet_fast.exchange`, reading the module's own conv/BN layers.

It owns no parameters or buffers. It keeps a plain (unregistered) reference
to its host HRNet module and a *plan* that names the fuse layers by index
(row i, column j, link k), and it looks the layers up on every call. So the
host's state_dict is untouched, `.to()`, `load_state_dict`, DDP and
`nn.SyncBatchNorm.convert_sync_batchnorm` (which swaps BN modules) keep
working, and deepcopy / pickling copy the host and its FusedExchange
together.

Per output branch i, terms j of the plan:
- ID:     x_i itself;
- UP:     j > i: 1x1 conv -> BN -> upsample (the op interpolates); a
          plain 1x1 conv runs as a GEMM (hrnet_fast.pointwise), with the
          BN folded into it in eval;
- DOWN:   j < i: stride-2 conv chain. In eval every link's BN is folded
          into its conv (the earlier links then apply ReLU in place) and
          the last conv runs inside the op via `convs=` where the backend
          has a conv-term kernel (else as a conv with the folded bias); in
          training the links run as modules;
- OPAQUE: anything else: the layer runs as a module and its output is summed.

In eval on the CPU, the first convs that read the same branch (UP 1x1
convs, first DOWN links) run as one conv (hrnet_fast.shared_source).

BatchNorm: eval uses running statistics, folded once and cached (keyed on
the tensors' identity, storage and version counters, so optimizer steps,
`load_state_dict` and `.to()` invalidate it). In training (batch
statistics) the BN module is called by default; with
`batch_stats_in_op = True` the statistics are computed here exactly as
nn.BatchNorm2d does (running update included) and the op applies the
affine. SyncBatchNorm in training is always called as a module so its
cross-process statistics stay intact.

Example:
    >>> import torch, hrnet_fast
    >>> m = hrnet_fast.models.create("w18_small_v1", "pose").eval()
    >>> _ = hrnet_fast.convert(m)
    >>> isinstance(hrnet_fast.fused_modules(m)[0].fused_exchange, hrnet_fast.FusedExchange)
    True
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .backend import conv_terms_in_kernel
from .layers import has_hooks, uses_batch_stats
from .ops import exchange
from .pointwise import conv1x1
from .shared_source import merged_first_convs, shared_sources

ID, UP, DOWN, OPAQUE = "id", "up", "down", "opaque"


class Term(NamedTuple):
    """One summand of output branch i: input branch j of kind ID/UP/DOWN/
    OPAQUE. For UP, `upsample` is None when the host interpolates inside
    forward (size-based), else ("scale", factors) or ("size", (h, w)) of its
    nn.Upsample; `in_kernel` says the DOWN chain's last conv may run inside
    the op (3x3, stride 2, padding 1, plain); `pointwise` says the UP conv
    is a plain 1x1 (stride 1, no padding, one group), run as a GEMM."""
    kind: str
    j: int
    upsample: Optional[Tuple[str, Tuple[float, float]]] = None
    in_kernel: bool = False
    pointwise: bool = False


def _eval_affine(bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """(scale, shift) with bn(z) == z * scale + shift from running stats."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _batch_affine(bn: nn.Module, z: Tensor) -> Tuple[Tensor, Tensor]:
    """(scale, shift) from z's batch statistics, and the running-buffer
    update nn.BatchNorm2d would make (biased variance to normalise, unbiased
    for the running average, momentum=None as a cumulative average)."""
    if z.dim() != 4:
        raise ValueError(f"expected 4D input (got {z.dim()}D input)")
    count = z.shape[0] * z.shape[2] * z.shape[3]
    if count == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {z.size()}")
    stats_in = z if z.dtype in (torch.float32, torch.float64) else z.float()
    var, mean = torch.var_mean(stats_in, dim=(0, 2, 3), correction=0)
    if bn.training and bn.track_running_stats and bn.running_mean is not None:
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        with torch.no_grad():
            unbiased = var.detach() * (count / (count - 1))
            bn.running_mean.mul_(1.0 - factor).add_(mean.detach().to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1.0 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fold(conv: nn.Conv2d, bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """conv followed by eval-mode bn as one conv: (weight, bias)."""
    scale, shift = _eval_affine(bn)
    weight = conv.weight * scale.to(conv.weight.dtype).view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else shift + conv.bias * scale
    return weight, bias.to(conv.weight.dtype)


def _plain_batchnorm(bn: nn.Module) -> bool:
    """A BN whose batch statistics are local (not SyncBatchNorm), so the
    affine can be computed here."""
    return isinstance(bn, nn.modules.batchnorm._BatchNorm) and not isinstance(bn, nn.SyncBatchNorm)


def _size_mismatch(expected: Sequence[int], got: Sequence[int]) -> RuntimeError:
    # The unconverted module fails in `y + t` with this kind of error.
    for dim, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return RuntimeError(f"The size of tensor a ({a}) must match the size of tensor b ({b}) at "
                                f"non-singleton dimension {dim + 2}")
    return RuntimeError("size mismatch in the HRNet exchange")


class FusedExchange(nn.Module):
    """The exchange step of one HRNet module (its `fuse_layers` + ReLU) as
    one `hrnet_fast.exchange` call per output branch.

    Created by `hrnet_fast.convert`; registered on the host as
    `fused_exchange` (it has no parameters, so state_dict is unchanged) and
    the host's forward is routed to `host_forward`.

    Example:
        >>> import torch, hrnet_fast
        >>> m = hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3).eval()
        >>> hrnet_fast.convert(m).stage2[0].fused_exchange.plan[0][1].kind
        'up'
    """

    def __init__(self, host: nn.Module, plan: List[List[Term]], mode: str, align_corners: bool,
                 backend: str = "auto", copy_branches_in_place: bool = True):
        super().__init__()
        # A plain attribute, not a submodule: the host owns the parameters.
        self.__dict__["host"] = host
        self.plan = plan
        self.mode = mode
        self.align_corners = bool(align_corners) and mode == "bilinear"
        self.backend = backend
        self.copy_branches_in_place = copy_branches_in_place
        # Training with batch statistics: False calls the BN module (ATen's
        # batch norm computes the statistics and the running update in one
        # pass; measured faster on the CPU than var_mean + affine in the op,
        # see benchmarks/RESULTS.md); True computes them here and hands the
        # affine to the op, saving the normalised tensor's memory pass.
        self.batch_stats_in_op = False
        self._cache: Dict[Any, Tuple[tuple, Tuple[Tensor, Tensor]]] = {}
        # First convs reading the same branch, merged in eval (NCHW, CPU;
        # hrnet_fast.shared_source), and their stacked folded weights.
        self.shared_sources = shared_sources(plan)
        self._stacked: Dict[Any, tuple] = {}
        self._conv_ok: Dict[Tuple[str, torch.device], bool] = {}

    def extra_repr(self) -> str:
        return f"rows={len(self.plan)}, mode={self.mode!r}, align_corners={self.align_corners}, " \
               f"backend={self.backend!r}"

    def clear_cache(self) -> None:
        """Drop the cached BN folds. They are recomputed whenever a folded
        tensor changes through PyTorch (in-place ops, optimizer steps,
        load_state_dict, .to()), which the tensors' version counters show;
        edits through `.data` bypass those counters, so call this (or
        `hrnet_fast.convert(model)` again) after them."""
        self._cache.clear()
        self._stacked.clear()
        self._conv_ok.clear()

    def __getstate__(self):
        # Folded weights are derived data: never pickle them.
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_cache"] = {}
        state["_stacked"] = {}
        state["_conv_ok"] = {}
        return state

    # -- host forward -----------------------------------------------------

    def host_forward(self, x: List[Tensor]) -> List[Tensor]:
        """Replacement for the host's forward: branches, then the exchange."""
        host = self.host
        if host.num_branches == 1:
            return [host.branches[0](x[0])]
        if self.copy_branches_in_place:
            # timm and the official repositories write the branch outputs
            # back into the caller's list; keep that visible behaviour.
            for i, branch in enumerate(host.branches):
                x[i] = branch(x[i])
            xs = x
        else:
            xs = [branch(t) for branch, t in zip(host.branches, x)]
        return self(xs)

    def forward(self, xs: List[Tensor]) -> List[Tensor]:
        rows = self.host.fuse_layers
        first: Dict[Tuple[int, int], Tensor] = {}
        if self.shared_sources and not torch.is_autocast_enabled(xs[0].device.type) and \
                not self._conv_terms(xs[0].device):
            first = merged_first_convs(self, xs)
        return [self._row(i, rows[i], xs, first) for i in range(len(self.plan))]

    # -- folding cache ----------------------------------------------------

    @staticmethod
    def _fold_tensors(conv: nn.Conv2d, bn: nn.Module) -> List[Tensor]:
        # The modules' dicts directly: nn.Module.__getattr__ costs about half
        # a microsecond per lookup, and this runs for every folded term on
        # every call. Parametrized convs keep no plain "weight" there.
        cp, bp, bb = conv._parameters, bn._parameters, bn._buffers
        if "weight" not in cp or "weight" not in bp or "running_mean" not in bb:
            found = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        else:
            found = (cp["weight"], cp.get("bias"), bp["weight"], bp.get("bias"), bb["running_mean"],
                     bb.get("running_var"))
        return [t for t in found if t is not None]

    def _folded(self, key: Any, conv: nn.Conv2d, bn: nn.Module) -> Tuple[Tensor, Tensor]:
        tensors = self._fold_tensors(conv, bn)
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            # Under autograd the fold must be part of the graph; under
            # compile it is traced (and constant-folded) with the model.
            return _fold(conv, bn)
        stamp = tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors) + \
            (bn.eps, torch.is_inference_mode_enabled())
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        folded = _fold(conv, bn)
        self._cache[key] = (stamp, folded)
        return folded

    # -- one output branch ------------------------------------------------

    def _row(self, i: int, row: nn.ModuleList, xs: List[Tensor], first: Dict[Tuple[int, int], Tensor]) -> Tensor:
        """Output branch i. `first` holds first-conv outputs already
        computed for several rows at once (merged_first_convs)."""
        target = tuple(xs[i].shape[-2:])
        autocast = torch.is_autocast_enabled(xs[i].device.type)
        inputs: List[Tensor] = []
        scales: List[Optional[Tensor]] = []
        shifts: List[Optional[Tensor]] = []
        convs: List[Tuple[Tensor, Tensor, Optional[Tensor]]] = []

        def add(t: Tensor, scale: Optional[Tensor] = None, shift: Optional[Tensor] = None) -> None:
            inputs.append(t)
            scales.append(scale)
            shifts.append(shift)

        for term in self.plan[i]:
            x = xs[term.j]
            layer = row[term.j]
            if term.kind == ID:
                add(x)
            elif term.kind == OPAQUE:
                t = layer(x)
                if term.j < i or (term.j > i and term.upsample is not None):
                    if tuple(t.shape[-2:]) != target:
                        raise _size_mismatch(target, t.shape[-2:])
                add(t)
            elif term.kind == UP:
                conv, bn = layer[0], layer[1]
                self._check_upsample(term, x, target)
                if (i, term.j) in first:
                    add(first[(i, term.j)])
                elif uses_batch_stats(bn):
                    z = conv1x1(x, conv.weight, conv.bias) if term.pointwise and not has_hooks(conv) else conv(x)
                    if self.batch_stats_in_op and _plain_batchnorm(bn):
                        add(z, *_batch_affine(bn, z))
                    else:
                        add(bn(z))
                else:
                    weight, bias = self._folded((i, term.j), conv, bn)
                    if not autocast:
                        weight, bias = weight.to(x.dtype), bias.to(x.dtype)
                    # BN folded into the 1x1 conv, shift as its bias (free
                    # in the conv's epilogue; no affine rows for the op)
                    if term.pointwise:
                        add(conv1x1(x, weight, bias))
                    else:
                        add(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))
            else:  # DOWN
                links = list(layer)
                merged = first.get((i, term.j))
                if merged is not None and len(links) == 1:  # the chain's only conv, BN folded
                    self._check_down(merged, target)
                    add(merged)
                    continue
                a = x if merged is None else merged
                for k in range(0 if merged is None else 1, len(links) - 1):
                    a = self._down_link((i, term.j, k), links[k], a)
                conv, bn = links[-1][0], links[-1][1]
                if uses_batch_stats(bn):
                    z = conv(a)
                    if self.batch_stats_in_op and _plain_batchnorm(bn):
                        scale, shift = _batch_affine(bn, z)
                        self._check_down(z, target)
                        add(z, scale, shift)
                    else:
                        z = bn(z)
                        self._check_down(z, target)
                        add(z)
                    continue
                weight, bias = self._folded((i, term.j), conv, bn)
                if term.in_kernel and not autocast and self._conv_terms(a.device):
                    landed = ((a.shape[-2] - 1) // 2 + 1, (a.shape[-1] - 1) // 2 + 1)
                    if landed != target:
                        raise _size_mismatch(target, landed)
                    convs.append((a, weight.to(a.dtype), bias.to(a.dtype)))
                else:
                    z = F.conv2d(a, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
                    self._check_down(z, target)
                    add(z)
        return self._call(inputs, scales, shifts, convs, target)

    def _down_link(self, key: Any, link: nn.Module, a: Tensor) -> Tensor:
        """An intermediate link conv -> BN -> ReLU of a DOWN chain. With
        running statistics the BN is folded into the conv (its shift as the
        conv's bias) and the ReLU runs in place: one pass over the link's
        output instead of three. Links with hooks run as modules, so the
        hooks fire."""
        conv, bn = link[0], link[1]
        if uses_batch_stats(bn) or has_hooks(link, *link):
            return link(a)
        weight, bias = self._folded(key, conv, bn)
        if not torch.is_autocast_enabled(a.device.type):
            weight, bias = weight.to(a.dtype), bias.to(a.dtype)
        return F.relu(F.conv2d(a, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups), inplace=True)

    def _conv_terms(self, device: torch.device) -> bool:
        """Whether the backend computes conv terms itself (one-pass kernel or
        the reference definition). Otherwise ops.py would run the conv as a
        library call and add it as one more input: doing that here with the
        folded bias saves building the extra affine rows on every call."""
        key = (self.backend, device)
        hit = self._conv_ok.get(key)
        if hit is None:
            hit = conv_terms_in_kernel(self.backend, device.type)
            if not torch.compiler.is_compiling():
                self._conv_ok[key] = hit
        return hit

    def _call(self, inputs, scales, shifts, convs, target) -> Tensor:
        # The unconverted sum promotes dtypes (e.g. float32 + bfloat16 under
        # autocast); the op wants one dtype, so cast to the promoted one.
        dtype = inputs[0].dtype
        for t in inputs[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        for a, _, _ in convs:
            dtype = torch.promote_types(dtype, a.dtype)
        inputs = [t if t.dtype == dtype else t.to(dtype) for t in inputs]
        convs = [(a.to(dtype), w.to(dtype), None if b is None else b.to(dtype)) for a, w, b in convs]
        if all(s is None for s in scales):
            scales = None
        if all(s is None for s in shifts):
            shifts = None
        return exchange(inputs, scales, shifts, convs=convs, size=target, mode=self.mode,
                        align_corners=self.align_corners, relu=True, backend=self.backend)

    @staticmethod
    def _check_down(z: Tensor, target: Tuple[int, int]) -> None:
        if tuple(z.shape[-2:]) != target:
            raise _size_mismatch(target, z.shape[-2:])

    @staticmethod
    def _check_upsample(term: Term, x: Tensor, target: Tuple[int, int]) -> None:
        """nn.Upsample(scale_factor) gives floor(h * s); if that is not the
        target size the unconverted module fails in the sum, and so do we."""
        if term.upsample is None:
            return
        how, value = term.upsample
        if how == "size":
            out = tuple(int(v) for v in value)
        else:
            out = tuple(int(math.floor(float(n) * float(s))) for n, s in zip(x.shape[-2:], value))
        if out != target:
            raise _size_mismatch(target, out)
