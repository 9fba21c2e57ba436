"""BatchNorm as an affine, folded into the convolution before it, and the
one cache of those folds.

In eval a BatchNorm with running statistics is y = z * scale + shift; folded
into the conv before it, that is one conv with weight * scale and bias
shift (+ bias * scale). In training (batch statistics) the affine comes from
the batch, and computing it here lets the exchange op apply it
(FusedExchange.batch_stats_in_op).

`FoldCache` keeps folds between calls, each until the Guard of the tensors
it was made from fails (hrnet_fast.plan.guard: a swapped, modified or
moved tensor -- optimizer steps, load_state_dict, functional_call, .to()
and training-mode forwards through the BN's num_batches_tracked counter).
Edits through `.data` bypass version counters: call `clear()` (or
`hrnet_fast.convert(model)` again) after them. Folds that must carry
gradients (a parameter requires grad under grad mode) or that are being
traced by torch.compile are never cached.

Example:
    >>> import torch, torch.nn as nn
    >>> from hrnet_fast.convert.folding import fold
    >>> conv, bn = nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8).eval()
    >>> w, b = fold(conv, bn)
    >>> x = torch.randn(1, 4, 5, 5)
    >>> torch.allclose(bn(conv(x)), nn.functional.conv2d(x, w, b), atol=1e-6)
    True
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..plan.guard import Guard, owned_tensors


def eval_affine(bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """(scale, shift) with bn(z) == z * scale + shift from running stats,
    computed in float32 at least (as ATen's batch norm does for half
    precision)."""
    dtype = torch.promote_types(bn.running_var.dtype, torch.float32)
    scale = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(dtype)
    shift = -bn.running_mean.to(dtype) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(dtype)
    return scale, shift


def batch_affine(bn: nn.Module, z: Tensor) -> Tuple[Tensor, Tensor]:
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


def fold(conv: nn.Conv2d, bn: nn.Module, dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """conv followed by eval-mode bn as one conv: (weight, bias), computed in
    float32 at least and returned in `dtype` (default: the conv weight's)."""
    scale, shift = eval_affine(bn)
    weight = conv.weight
    dtype = dtype or weight.dtype
    w = weight.to(scale.dtype) * scale.view(-1, 1, 1, 1)
    b = shift if conv.bias is None else shift + conv.bias.to(scale.dtype) * scale
    return w.to(dtype), b.to(dtype)


def fold_tensors(conv: nn.Conv2d, bn: nn.Module) -> List[Tensor]:
    """Every tensor a fold of (conv, bn) is made from."""
    return [t for _, _, t in owned_tensors(conv) + owned_tensors(bn)]


def needs_grad(tensors: List[Tensor]) -> bool:
    """Whether a fold of these tensors must be part of the autograd graph."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def cacheable_now() -> bool:
    """Whether folds may be kept across calls at all now: not while
    torch.compile or torch.jit.trace records the model (the fold must be
    part of what they record)."""
    return not torch.compiler.is_compiling() and not torch.jit.is_tracing()


class FoldCache:
    """Folds of (conv, bn) pairs by key, each kept with the Guard of the
    tensors it was made from (hrnet_fast.plan.guard: the same tensor
    objects, unmodified, in the same storage)."""

    def __init__(self) -> None:
        self._entries: Dict[Any, Tuple[Guard, Any, Tuple[Tensor, Tensor]]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any, conv: nn.Conv2d, bn: nn.Module, dtype: torch.dtype,
            cacheable: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
        """The (weight, bias) fold of conv and bn in `dtype`. `cacheable`:
        cacheable_now(), when the caller has it at hand (it is the same for
        every fold of one forward)."""
        if not (cacheable_now() if cacheable is None else cacheable) or needs_grad(fold_tensors(conv, bn)):
            # Under autograd the fold is part of the graph; under compile or
            # a trace it is recorded (and constant-folded) with the model.
            return fold(conv, bn, dtype)
        context = (conv, bn, bn.eps, dtype, torch.is_inference_mode_enabled())
        hit = self._entries.get(key)
        if hit is not None and hit[1] == context and hit[0].holds():
            return hit[2]
        folded = fold(conv, bn, dtype)
        self._entries[key] = (Guard(owned_tensors(conv) + owned_tensors(bn)), context, folded)
        return folded
