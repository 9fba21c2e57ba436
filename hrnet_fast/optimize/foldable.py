"""Whether a BatchNorm can fold into the convolution before it: the one
rule the graph rewrite and the exchange rows share."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ..convert.layers import has_hooks, is_batchnorm


def foldable_bn_reason(bn: nn.Module) -> Optional[str]:
    """Why `bn` cannot fold (None: it can)."""
    if not is_batchnorm(bn):
        return "not a BatchNorm"
    if bn.training:
        return "in training mode"
    if bn.running_mean is None or bn.running_var is None:
        return "no running statistics (normalises with batch statistics even in eval)"
    if has_hooks(bn):
        return "has hooks"
    if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm3d)):
        return "not a 2-D BatchNorm"
    return None
