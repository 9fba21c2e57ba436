"""Predicates on the layers of an HRNet exchange, shared by FusedExchange
(modules.py) and the merged first convs (shared_source.py)."""
from __future__ import annotations

import torch.nn as nn


def uses_batch_stats(bn: nn.Module) -> bool:
    """Whether `bn` normalises with batch statistics (training, or no
    running statistics kept): then its conv's own output is needed."""
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def has_hooks(*modules: nn.Module) -> bool:
    """Whether any of `modules` has forward (pre-)hooks: such a layer runs
    as a module, so its hooks fire and see what they saw unconverted."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)
