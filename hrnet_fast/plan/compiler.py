"""The one compiler of an HRNet module's inference exchange: its terms
(hrnet_fast.convert.terms, read by their `kind`) and one input signature in,
a Program (plan.program) out.

Every summand becomes a fixed chain of instructions on folded weights:

    id       the input register itself
    up       the folded 1x1 conv of x_j; the op resizes. Where the layer
             upsamples to another size than the host resizes to (mmseg at
             odd sizes) the layer's resample runs first (Resample).
    down     the chain's earlier links as folded convs with ReLU; the last
             link's conv joins the op as a conv term where the backend
             computes them itself (`convs_in_kernel`), else as an input
    opaque   the layer run as a module (Module)

Terms are read by duck typing (`kind`, their layers, `foldable()`,
`hooked()`), so this layer imports nothing of the convert layer above it. A
term whose layers carry forward hooks runs as its layer (Module), so that
the hooks fire and see what they saw unconverted.

Options say how (they are all the difference between a converted model's
eval path and `hrnet_fast.optimize`):

    fold             (conv, bn, key, dtype) -> the folded (weight, bias)
    engine           how 3x3 convolutions run (plan.program: aten, mkldnn,
                     cudnn); 1x1 convolutions too unless `gemm_1x1`
    gemm_1x1         1x1 convolutions as one matrix product (CPU)
    merge            the first convs that read the same branch as one conv
                     with stacked weights, split afterwards (CPU, NCHW: it
                     saves the per-call cost of the smaller convs)
    convs_in_kernel  the backend computes stride-2 conv terms itself
    bias_to_op       the last conv's bias goes to the op as its input's
                     shift (cuDNN's plain convolution would add it in a pass
                     of its own)
    guard            rest the program on the layers' tensors, BN modes and
                     hooks (a converted model); False for a frozen copy

Shapes are known here, so every summand's size is checked once, at compile
time, with the error the unconverted module's sum would give (a module's
output, whose shape is only known when it runs, is checked then).

`compile_program` returns None when a summand cannot be a fixed chain now
(a BN with batch statistics): the caller runs its terms instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..contract import affine_dtype, landed_size
from .guard import Guard
from .program import Conv, Exchange, Instruction, Module, Program, Relu, Resample, Signature, Split, summand_mismatch

Fold = Callable[[nn.Module, nn.Module, tuple, torch.dtype], Tuple[Tensor, Tensor]]
Shape = Tuple[int, int, int, int]


@dataclass(frozen=True)
class Options:
    mode: str
    align_corners: bool
    backend: str
    fold: Fold
    relu: bool = True
    engine: str = "aten"
    gemm_1x1: bool = False
    merge: bool = False
    convs_in_kernel: bool = False
    bias_to_op: bool = False
    guard: bool = True
    where: str = "HRNet module"
    # Engine-specific constants for a conv of this input shape (e.g. a
    # weight prepacked for it); None: the weight as it is.
    prepare: Optional[Callable[[Conv, Shape], Conv]] = None


def _conv_out(shape: Shape, conv: nn.Conv2d, out_channels: int) -> Shape:
    n, _, h, w = shape
    sizes = []
    for d, size in enumerate((h, w)):
        k, s, p, dl = conv.kernel_size[d], conv.stride[d], conv.padding[d], conv.dilation[d]
        sizes.append((size + 2 * p - dl * (k - 1) - 1) // s + 1)
    return n, out_channels, sizes[0], sizes[1]



class _Builder:
    """Registers, shapes and instructions of the program being written."""

    def __init__(self, xs: Sequence[Tensor], options: Options):
        self.options = options
        self.dtype = xs[0].dtype
        self.shapes: Dict[int, Optional[Shape]] = {k: tuple(x.shape) for k, x in enumerate(xs)}
        self.registers = len(xs)
        self.inputs = len(xs)
        self.code: List[Instruction] = []
        self.folded: List[Tuple[nn.Module, nn.Module]] = []

    def register(self, shape: Optional[Shape]) -> int:
        r = self.registers
        self.registers += 1
        self.shapes[r] = shape
        return r

    def fold(self, conv, bn, key) -> Tuple[Tensor, Tensor]:
        self.folded.append((conv, bn))
        return self.options.fold(conv, bn, key, self.dtype)

    def conv(self, src: int, conv: nn.Conv2d, weight: Tensor, bias: Optional[Tensor], relu: bool,
             pointwise: bool = False) -> int:
        o = self.options
        engine = "gemm" if pointwise and o.gemm_1x1 else o.engine
        shape = self.shapes[src]
        bias = None if bias is None else bias.to(weight.dtype)
        ins = Conv(self.register(_conv_out(shape, conv, weight.shape[0])), src, weight, bias, tuple(conv.stride),
                   tuple(conv.padding), tuple(conv.dilation), int(conv.groups), relu, engine)
        if o.prepare is not None:
            ins = o.prepare(ins, shape)
        self.code.append(ins)
        return ins.dst

    def split(self, src: int, sizes: List[int]) -> List[int]:
        n, _, h, w = self.shapes[src]
        dsts = tuple(self.register((n, c, h, w)) for c in sizes)
        self.code.append(Split(src, dsts, tuple(sizes)))
        return list(dsts)


def _merge_first_convs(b: _Builder, rows, xs: Sequence[Tensor]) -> Dict[Tuple[int, int], int]:
    """The merge option: {(row, branch): register of that term's first conv's
    output (BN folded, ReLU applied where its chain goes on)} for every group
    of two or more first convs that read the same NCHW CPU branch with one
    geometry."""
    groups: Dict[Tuple[int, str], list] = {}
    for row in rows:
        for t in row:
            if ((t.kind == "up" and t.pointwise) or t.kind == "down") and not t.hooked():
                groups.setdefault((t.j, t.kind), []).append(t)
    merged: Dict[Tuple[int, int], int] = {}
    for (j, kind), terms in groups.items():
        x = xs[j]
        if len(terms) < 2 or x.device.type != "cpu" or not x.is_contiguous():
            continue
        if kind == "up":
            members = [(t, t.conv, t.bn, (t.i, t.j), False) for t in terms]
        else:
            members = [(t, t.links[0][1], t.links[0][2], (t.i, t.j, 0) if len(t.links) > 1 else (t.i, t.j),
                        len(t.links) > 1) for t in terms]
        geometry = {(c.kernel_size, c.stride, c.padding, c.dilation, c.groups) for _, c, _, _, _ in members}
        if len(geometry) != 1 or next(iter(geometry))[4] != 1:
            continue
        folds = [b.fold(conv, bn, key) for _, conv, bn, key, _ in members]
        weight, bias = torch.cat([w for w, _ in folds]), torch.cat([c for _, c in folds])
        y = b.conv(j, members[0][1], weight, bias, relu=False, pointwise=kind == "up")
        parts = b.split(y, [int(w.shape[0]) for w, _ in folds])
        for (t, _, _, _, goes_on), reg in zip(members, parts):
            if goes_on:
                b.code.append(Relu(reg))
            merged[(t.i, j)] = reg
    return merged


def _summand(b: _Builder, t, xs: Sequence[Tensor], merged: Dict[Tuple[int, int], int], like: Shape,
             inputs: List[int], shifts: List[Optional[Tensor]], convs: List[tuple]) -> None:
    """Writes the instructions of term `t` of the row shaped `like` and adds
    its summand to the row's inputs (or conv terms)."""
    o = b.options
    target = like[2:]

    def check(shape: Shape, spatial: bool = True) -> None:
        n = 4 if spatial else 2
        if tuple(shape[:n]) != tuple(like[:n]):
            raise summand_mismatch(o.where, t.i, t.j, like, shape)

    def add(reg: int, shift: Optional[Tensor] = None) -> None:
        inputs.append(reg)
        shifts.append(shift)

    def last_bias(bias: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """(bias kept in the conv, shift for the op)."""
        if o.bias_to_op:
            return None, bias.to(affine_dtype(b.dtype))
        return bias, None

    if t.kind == "id":
        check(b.shapes[t.j])
        add(t.j)
    elif t.kind == "opaque" or t.hooked():
        dst = b.register(None)
        host_resizes = t.kind != "down" and t.host_resizes
        b.code.append(Module(dst, t.j, t.layer, tuple(like), not host_resizes, o.where, t.i, t.j))
        add(dst)
    elif t.kind == "up":
        reg = merged.get((t.i, t.j))
        shift = None
        if reg is None:
            weight, bias = b.fold(t.conv, t.bn, (t.i, t.j))
            size = t.landing(*_conv_out(b.shapes[t.j], t.conv, weight.shape[0])[2:])
            kept, shift = last_bias(bias) if size == target else (bias, None)
            reg = b.conv(t.j, t.conv, weight, kept, relu=False, pointwise=t.pointwise)
        shape = b.shapes[reg]
        size = t.landing(*shape[2:])
        if size != target:
            if not t.host_resizes:
                check((*shape[:2], *size))
            if t.upsample is not None:
                # The layer upsamples to one size and the host resizes to
                # another: the layer's resample first, the op's second.
                up = t.upsample
                dst = b.register((*shape[:2], *size))
                b.code.append(Resample(dst, reg, size, up.mode, up.align_corners))
                reg = dst
        check(b.shapes[reg], spatial=False)
        add(reg, shift)
    elif t.kind == "down":
        links = t.links
        reg = merged.get((t.i, t.j))
        first = 0 if reg is None else 1
        a = t.j if reg is None else reg
        if reg is not None and len(links) == 1:
            check(b.shapes[reg])
            add(reg)
            return
        for k in range(first, len(links) - 1):
            _, conv, bn, _ = links[k]
            weight, bias = b.fold(conv, bn, (t.i, t.j, k))
            a = b.conv(a, conv, weight, bias, relu=True)
        _, conv, bn, _ = links[-1]
        weight, bias = b.fold(conv, bn, (t.i, t.j))
        if t.in_kernel and o.convs_in_kernel:
            n = b.shapes[a][0]
            check((n, weight.shape[0], *landed_size(b.shapes[a])))
            convs.append((a, weight, bias.to(affine_dtype(b.dtype))))
            return
        kept, shift = last_bias(bias)
        reg = b.conv(a, conv, weight, kept, relu=False)
        check(b.shapes[reg])
        add(reg, shift)
    else:  # pragma: no cover - every term kind is above
        raise ValueError(f"unknown term kind {t.kind!r}")


def compile_program(rows: Sequence[Sequence[object]], xs: Sequence[Tensor], options: Options) -> Optional[Program]:
    """The Program of `rows` (each output branch's terms) for inputs like
    `xs`, or None when some summand cannot be a fixed chain now (a term's
    `foldable()`: a BN with batch statistics)."""
    if not all(t.foldable() for row in rows for t in row):
        return None
    b = _Builder(xs, options)
    merged = _merge_first_convs(b, rows, xs) if options.merge else {}
    for i, terms in enumerate(rows):
        like = b.shapes[i]
        inputs: List[int] = []
        shifts: List[Optional[Tensor]] = []
        convs: List[tuple] = []
        for t in terms:
            _summand(b, t, xs, merged, like, inputs, shifts, convs)
        b.code.append(Exchange(tuple(inputs), tuple(shifts) if any(s is not None for s in shifts) else None,
                               tuple(convs), (like[2], like[3]), options.mode, options.align_corners, options.relu,
                               options.backend))
    guard = None
    if options.guard:
        modules = [m for conv, bn in b.folded for m in (conv, bn)]
        run = [m for row in rows for t in row for m in t.modules]
        guard = Guard.of_modules(modules, bns=list({id(bn): bn for _, bn in b.folded}.values()),
                                 hooked=list({id(m): m for m in run}.values()))
    return Program(tuple(b.code), b.registers, b.inputs, Signature.of(xs), guard)


__all__ = ["Options", "compile_program"]
