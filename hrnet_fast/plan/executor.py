"""The Python executor of a Program (plan.program): each instruction bound
once to its operands as a step, then one loop over the steps.

A row's first exchange runs through `hrnet_fast.exchange` (every check, the
backend's choice); later ones through the runner that call's backend
returned (ops.bind_exchange), which the program's signature keeps valid.
`runners` are what the C++ executor (plan.native) reads to know that every
row goes straight to the C++ op.

Example:
    >>> import torch
    >>> from hrnet_fast.plan.executor import PythonExecutor
    >>> from hrnet_fast.plan.program import Conv, Exchange, Program
    >>> w = torch.randn(4, 4, 3, 3)
    >>> p = Program((Conv(1, 0, w, None, (2, 2), (1, 1), (1, 1), 1),
    ...              Exchange((1,), None, (), (4, 4), "nearest", False, True, "auto")), registers=2, inputs=1)
    >>> x = torch.randn(1, 4, 8, 8)
    >>> y, = PythonExecutor(p).run([x])
    >>> torch.allclose(y, torch.relu(torch.nn.functional.conv2d(x, w, stride=2, padding=1)))
    True
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import bind_exchange, exchange
from .engines import run_conv
from .program import Conv, Exchange, Module, Program, Relu, Resample, Split, summand_mismatch

Registers = List[Optional[Tensor]]
Step = Callable[[Registers, List[Tensor]], None]


class PythonExecutor:
    """Runs one Program; `run(xs)` gives the output branches."""

    def __init__(self, program: Program):
        self.program = program
        self.runners: List[Optional[Callable]] = [None] * program.outputs
        self._slot = 0
        self.steps: List[Step] = [self._step(ins) for ins in program.code]

    def _read(self, r: int) -> Callable[[Registers], Tensor]:
        """A reader of register r: inputs stay, intermediates are released
        by their one read."""
        if r < self.program.inputs:
            return lambda regs: regs[r]

        def take(regs: Registers) -> Tensor:
            t = regs[r]
            regs[r] = None
            return t
        return take

    def _step(self, ins) -> Step:
        read = self._read
        if isinstance(ins, Conv):
            src, dst = read(ins.src), ins.dst
            args = (ins.engine, ins.weight, ins.bias, ins.stride, ins.padding, ins.dilation, ins.groups, ins.relu)
            engine, weight, bias, stride, padding, dilation, groups, relu = args

            def conv(regs, outs):
                regs[dst] = run_conv(engine, src(regs), weight, bias, stride, padding, dilation, groups, relu)
            return conv
        if isinstance(ins, Split):
            src, dsts, sizes = read(ins.src), ins.dsts, list(ins.sizes)

            def split(regs, outs):
                for dst, part in zip(dsts, src(regs).split_with_sizes(sizes, 1)):
                    regs[dst] = part
            return split
        if isinstance(ins, Relu):
            reg = ins.reg

            def relu(regs, outs):
                regs[reg].relu_()
            return relu
        if isinstance(ins, Resample):
            src, dst, size, mode = read(ins.src), ins.dst, ins.size, ins.mode
            align = ins.align_corners if mode == "bilinear" else None

            def resample(regs, outs):
                regs[dst] = F.interpolate(src(regs), size=size, mode=mode, align_corners=align)
            return resample
        if isinstance(ins, Module):
            src, dst, module = read(ins.src), ins.dst, ins.module
            n = 4 if ins.spatial else 2

            def run_module(regs, outs):
                t = module(src(regs))
                if tuple(t.shape[:n]) != ins.row[:n] or t.dim() != 4:
                    raise summand_mismatch(ins.where, ins.i, ins.j, ins.row, t.shape)
                regs[dst] = t
            return run_module
        if isinstance(ins, Exchange):
            return self._exchange_step(ins)
        raise TypeError(f"not an instruction: {ins!r}")  # pragma: no cover

    def _exchange_step(self, ins: Exchange) -> Step:
        readers = [self._read(r) for r in ins.inputs]
        conv_readers = [(self._read(r), w, b) for r, w, b in ins.convs]
        slot = self._slot
        self._slot += 1
        shifts = list(ins.shifts) if ins.shifts is not None else None
        runners = self.runners

        def row(regs, outs):
            inputs = [read(regs) for read in readers]
            convs = [(read(regs), w, b) for read, w, b in conv_readers]
            runner = runners[slot]
            if runner is not None:
                outs.append(runner(inputs, convs))
                return
            outs.append(exchange(inputs, None, shifts, convs=convs, size=ins.size, mode=ins.mode,
                                 align_corners=ins.align_corners, relu=ins.relu, backend=ins.backend))
            runners[slot] = bind_exchange(inputs, convs, ins.size, ins.mode, ins.align_corners, ins.relu, ins.backend,
                                          shifts)
        return row

    def run(self, xs: Sequence[Tensor]) -> List[Tensor]:
        regs: Registers = [None] * self.program.registers
        regs[:len(xs)] = xs
        outs: List[Tensor] = []
        for step in self.steps:
            step(regs, outs)
        return outs


__all__ = ["PythonExecutor"]
