"""HRNet models with the official key layout.

Example:
    >>> import torch, hrnet_fast
    >>> m = hrnet_fast.models.create("w18_small_v1", "seg", num_classes=5).eval()
    >>> m(torch.randn(1, 3, 64, 48)).shape
    torch.Size([1, 5, 16, 12])
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from .configs import ARCHS
from .hrmodule import HighResolutionModule
from .hrnet import HRNetPose, HRNetSeg

HEADS = ("seg", "pose")


def create(arch: str, head: str, **kw: Any) -> nn.Module:
    """Build an HRNet: arch in ARCHS (w18_small_v1, w18_small_v2, w18, w32,
    w48, w64), head "seg" (num_classes, align_corners) or "pose"
    (num_joints). Weights are randomly initialised; load a checkpoint with
    load_state_dict."""
    if head == "seg":
        return HRNetSeg(arch, **kw)
    if head == "pose":
        return HRNetPose(arch, **kw)
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


__all__ = ["create", "ARCHS", "HEADS", "HighResolutionModule", "HRNetSeg", "HRNetPose"]
