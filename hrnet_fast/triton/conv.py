"""exchange with stride-2 conv terms on the Triton backend.

The conv terms run as library convolutions (cuDNN) and join the fused sum
as extra same-size inputs with scale 1 and shift = bias, which keeps the
result exact and differentiable (autograd flows through F.conv2d and the
exchange op)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ConvTerm = Tuple[Tensor, Tensor, Optional[Tensor]]


def exchange_conv(inputs: Sequence[Tensor], scales: Tensor, shifts: Tensor, convs: Sequence[ConvTerm],
                  size: Sequence[int], mode: str, align_corners: bool, relu: bool) -> Tensor:
    """y = act(sum_k interp(x_k * s_k + b_k) + sum_m conv2d(a_m, w_m, bias_m, stride=2, padding=1))."""
    from . import exchange  # the package entry point; imported here to avoid a cycle

    channels = scales.shape[1]
    extra = [F.conv2d(a, w.to(a.dtype), None, stride=2, padding=1) for a, w, _ in convs]
    ones = torch.ones((len(convs), channels), dtype=scales.dtype, device=scales.device)
    biases = [torch.zeros(channels, dtype=shifts.dtype, device=shifts.device) if b is None
              else b.to(shifts.dtype) for _, _, b in convs]
    all_scales = torch.cat([scales, ones]) if convs else scales
    all_shifts = torch.cat([shifts, torch.stack(biases)]) if convs else shifts
    return exchange(list(inputs) + extra, all_scales, all_shifts, size, mode, align_corners, relu)
