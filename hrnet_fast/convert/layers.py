"""Predicates on the layers of an HRNet exchange, shared by the terms
(terms.py), the layout reader (layouts.py) and optimize."""
from __future__ import annotations

import torch.nn as nn


def uses_batch_stats(bn: nn.Module) -> bool:
    """Whether `bn` normalises with batch statistics (training, or no
    running statistics kept): then its conv's own output is needed."""
    # The buffers dict directly: nn.Module.__getattr__ is slow, and this
    # runs for every BN of every exchange call.
    if bn.training:
        return True
    buffers = bn._buffers
    return buffers.get("running_mean") is None and buffers.get("running_var") is None


def has_hooks(*modules: nn.Module) -> bool:
    """Whether any of `modules` has forward (pre-)hooks: such a layer runs
    as a module, so its hooks fire and see what they saw unconverted."""
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks:
            return True
    return False


def plain_batchnorm(bn: nn.Module) -> bool:
    """A BN whose batch statistics are local (not SyncBatchNorm), so the
    affine can be computed here."""
    return isinstance(bn, nn.modules.batchnorm._BatchNorm) and not isinstance(bn, nn.SyncBatchNorm)


def is_batchnorm(m) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def is_conv(m) -> bool:
    """A plain nn.Conv2d (zero padding), the only conv the terms fold."""
    return type(m) is nn.Conv2d and m.padding_mode == "zeros"
