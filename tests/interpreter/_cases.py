"""Shared cases for the Triton-interpreter tests: small shapes (the
interpreter runs every program in Python) that still cover odd sizes, power
of two factors, a 1x1 source and channel counts that are not multiples of
the channel block."""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import pytest
import torch
from torch import Tensor

# (mode, align_corners)
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]

# (output size, source sizes of the smaller inputs)
ODD = ((15, 9), [(8, 5), (3, 2), (1, 1)])
POW2 = ((8, 12), [(4, 6), (2, 3), (1, 1)])


def every_case(test: Callable) -> Callable:
    """Parametrizes a test over every mode, the odd and power-of-two shapes
    and both memory formats: arguments mode, align_corners, case,
    channels_last."""
    for mark in (pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"]),
                 pytest.mark.parametrize("case", [ODD, POW2], ids=["odd", "pow2"]),
                 pytest.mark.parametrize("mode,align_corners", MODES)):
        test = mark(test)
    return test


def make_inputs(n: int, c: int, size: Tuple[int, int], smaller: Sequence[Tuple[int, int]],
                dtype: torch.dtype = torch.float32, channels_last: bool = False
                ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
    """One same-size input plus the smaller ones, with per-channel affines
    (scales away from zero, shifts of both signs so the ReLU cuts)."""
    shapes = [size] + list(smaller)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=fmt) for h, w in shapes]
    ss = [(torch.rand(c, dtype=dtype) + 0.5) for _ in shapes]
    bs = [torch.randn(c, dtype=dtype) * 0.5 for _ in shapes]
    return xs, ss, bs


def leaf_copies(tensors: Sequence[Tensor]) -> List[Tensor]:
    """Independent leaves with the same values and strides, requiring grad."""
    out = []
    for t in tensors:
        u = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
        u.copy_(t)
        out.append(u.requires_grad_())
    return out


def assert_close_nonzero(actual: Tensor, expected: Tensor, **tol) -> None:
    """allclose, and the expected value is not trivially zero (a test that
    compares zeros with zeros could not fail)."""
    assert expected.abs().max() > 0
    torch.testing.assert_close(actual, expected, **tol)
