"""An HRNet module's inference exchange as a program: named instructions
over registers, compiled for one input signature (plan.compiler) and run by
one of two executors (plan.executor in Python, plan.native as one C++ call).

Registers 0..B-1 hold the module's branch outputs, the exchange's inputs.
Every later register is written once and read once, and a read releases it,
so intermediates live no longer than in eager code. Each `Exchange` writes
one output branch, in order.

    Conv      dst = conv2d(src, weight, bias) [then ReLU], by an engine:
                aten    F.conv2d, then an in-place ReLU
                gemm    a 1x1 convolution as one matrix product
                        (hrnet_fast.pointwise.conv1x1)
                mkldnn  oneDNN's convolution with the ReLU as a post-op and
                        the weight prepacked for this input shape
                cudnn   cuDNN's fused convolution + bias + ReLU
    Split     dsts = src split along the channels
    Relu      reg = relu(reg), in place
    Resample  dst = F.interpolate(src, size, mode, align_corners): the first
              of two resamplings where a layer upsamples to one size and its
              host resizes to another (mmseg at odd sizes)
    Module    dst = module(src): a summand that runs as its own layer (Python
              executor only)
    Exchange  next output = hrnet_fast.exchange(inputs, shifts, convs, size,
              mode, align_corners, relu, backend)

Example:
    >>> import torch
    >>> from hrnet_fast.plan.program import Conv, Exchange, Program
    >>> w = torch.randn(4, 4, 3, 3)
    >>> p = Program((Conv(1, 0, w, None, (2, 2), (1, 1), (1, 1), 1),
    ...              Exchange((1,), None, (), (4, 4), "nearest", False, True, "auto")), registers=2, inputs=1)
    >>> p.outputs
    1
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from .guard import Guard

ENGINES = ("aten", "gemm", "mkldnn", "cudnn")
Pair = Tuple[int, int]
Shape = Sequence[int]


@dataclass(frozen=True)
class Conv:
    dst: int
    src: int
    weight: Tensor
    bias: Optional[Tensor]
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    relu: bool = False
    engine: str = "aten"


@dataclass(frozen=True)
class Split:
    src: int
    dsts: Tuple[int, ...]
    sizes: Tuple[int, ...]


@dataclass(frozen=True)
class Relu:
    reg: int


@dataclass(frozen=True)
class Resample:
    dst: int
    src: int
    size: Pair
    mode: str
    align_corners: bool


@dataclass(frozen=True)
class Module:
    dst: int
    src: int
    module: nn.Module
    # Its output is summand j of row i, whose shape is `row`: checked in
    # full, or (`spatial` False: the host resizes it, so the op does) its
    # batch and channels only.
    row: Tuple[int, ...]
    spatial: bool
    where: str
    i: int
    j: int


@dataclass(frozen=True)
class Exchange:
    inputs: Tuple[int, ...]
    # One (C,) shift or None per input (a folded bias the op adds while it
    # reads the input), or None for none at all.
    shifts: Optional[Tuple[Optional[Tensor], ...]]
    # Stride-2 conv terms the op computes itself: (register, weight, bias).
    convs: Tuple[Tuple[int, Tensor, Optional[Tensor]], ...]
    size: Pair
    mode: str
    align_corners: bool
    relu: bool
    backend: str


def summand_mismatch(where: str, i: int, j: int, expected: Shape, got: Shape) -> RuntimeError:
    """The error for a summand of row i (from branch j) whose shape is not
    the row's: a RuntimeError, as the unconverted module's `y + t` raises,
    naming the module, the branch and both shapes. Shapes whose broadcast
    the unconverted sum would accept by accident (a 1x1 summand) are refused
    here too: no HRNet computes that."""
    expected, got = tuple(int(v) for v in expected), tuple(int(v) for v in got)
    message = f"{where}: fuse_layers[{i}][{j}] gives a summand of shape {got} for output branch {i} of shape {expected}"
    for dim, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            message += f" (the size of tensor a ({a}) must match the size of tensor b ({b}) at dimension {dim})"
            break
    return RuntimeError(message)


Instruction = Union[Conv, Split, Relu, Resample, Module, Exchange]


@dataclass(frozen=True)
class Signature:
    """What a program is compiled for: the inputs' shapes, dtype, device,
    NCHW contiguity, and whether inference mode was on (an inference tensor
    cannot be saved for backward, so constants made there stay there)."""
    shapes: Tuple[Tuple[int, ...], ...]
    dtype: torch.dtype
    device: torch.device
    contiguous: Tuple[bool, ...]
    inference: bool

    @classmethod
    def of(cls, xs) -> "Signature":
        x0 = xs[0]
        return cls(tuple(tuple(x.shape) for x in xs), x0.dtype, x0.device, tuple(x.is_contiguous() for x in xs),
                   torch.is_inference_mode_enabled())


@dataclass
class Program:
    code: Tuple[Instruction, ...]
    registers: int
    inputs: int
    signature: Optional[Signature] = None
    # What the constants rest on; None: nothing (a private frozen copy).
    guard: Optional[Guard] = None
    outputs: int = field(init=False)

    def __post_init__(self) -> None:
        self.outputs = sum(isinstance(ins, Exchange) for ins in self.code)

    def holds(self) -> bool:
        return self.guard is None or self.guard.holds()

    def __repr__(self) -> str:
        lines = [f"Program({self.inputs} inputs, {self.registers} registers, {self.outputs} outputs)"]
        for ins in self.code:
            fields = {k: v for k, v in vars(ins).items() if not isinstance(v, (Tensor, nn.Module))}
            lines.append(f"  {type(ins).__name__}({', '.join(f'{k}={v}' for k, v in fields.items())})")
        return "\n".join(lines)


__all__ = ["Conv", "ENGINES", "Exchange", "Instruction", "Module", "Program", "Relu", "Resample", "Signature",
           "Split", "summand_mismatch"]
