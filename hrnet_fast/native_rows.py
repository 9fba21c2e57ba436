"""A converted module's eval exchange as one C++ call.

`InferenceRows` (hrnet_fast.inference_rows) already runs a module's eval
exchange as fixed chains of library calls on folded weights, but from
Python: its twenty-odd calls per stage-4 module (convolutions, GEMMs,
splits, in-place ReLUs, one op call per row) and the loop around them cost
a few hundred microseconds of interpreter work on a small CPU, against tens
for the calls' own dispatch. When every row goes to the C++ op
(backend.native.OpRunner) and no term runs as a module, `compile_rows`
writes those chains as a program for csrc/rows_plan.cpp's RowsPlan, and a
call is then one C function, `run_rows(state, xs)`. The calls it makes
inside are ordinary dispatcher calls: profilers and dispatch modes see the
same convolutions and exchange ops as from Python.

The plan holds the folded weights and checks, in C, everything it was
built for: grad, inference, autocast and trace modes, no torch-function
mode; the inputs (plain Tensors: a subclass's __torch_function__ must see
the calls) and their shapes, dtype, device and NCHW contiguity; every tensor a fold was made from
(version counter and storage); every BN in eval; no hooks on the layers it
stands for, on the calling module or global ones (counted through
RemovableHandle, so the hook dicts are read only after a registration).
When anything does not hold, the call returns None and the module takes
its general path, which rebuilds the rows.

Example:
    >>> import torch, hrnet_fast
    >>> m = hrnet_fast.models.create("w18_small_v1", "pose").eval()
    >>> _ = hrnet_fast.convert(m, backend="cpu")
    >>> with torch.no_grad():
    ...     _ = m(torch.randn(1, 3, 64, 64)); _ = m(torch.randn(1, 3, 64, 64))
    >>> fx = hrnet_fast.fused_modules(m)[0].fused_exchange
    >>> fx.native_rows is not None or not hrnet_fast.backends()["cpu"]
    True
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from torch import Tensor
from torch.utils.hooks import RemovableHandle

from .backend.native import OpRunner, rows_plan, run_rows
from .inference_rows import InferenceRows

# Opcodes of csrc/rows_plan.cpp.
CONV, CONV1X1, SPLIT, RELU, EXCHANGE = range(5)


class NativeRows:
    """A compiled RowsPlan (see the module doc). `state` -- (plan, BN
    modules, hook dicts, RemovableHandle) -- is what `run_rows(state, xs)`
    takes, which is all a call is: the rows' outputs, or None when the
    general path must run. The Python objects travel with each call rather
    than inside the plan, so the garbage collector sees every reference."""
    __slots__ = ("state",)

    def __init__(self, plan, bns: Sequence[object], hook_dicts: Sequence[dict]):
        self.state = (plan, tuple(bns), tuple(hook_dicts), RemovableHandle)


def _geometry(stride, padding, dilation, groups) -> Optional[List[int]]:
    """The conv operands, or None for a geometry the program cannot state
    (string padding)."""
    if not all(isinstance(v, tuple) and len(v) == 2 and all(type(e) is int for e in v)
               for v in (stride, padding, dilation)):
        return None
    return [*stride, *padding, *dilation, int(groups)]


def compile_rows(rows: InferenceRows, xs: Sequence[Tensor], hook_dicts: Sequence[dict] = ()) -> Optional[NativeRows]:
    """`rows` (built for `xs`, every row's runner bound) as one RowsPlan, or
    None when some part must stay in Python: a row that is not a plain op
    call, a term run as a module, a conv term the op computes itself, or no
    extension. `hook_dicts`: more hook dicts that must be empty for it to
    run (the calling module's own, and the global ones)."""
    runners = rows.runners
    if run_rows is None or not runners or not all(isinstance(r, OpRunner) for r in runners):
        return None
    first = runners[0]
    if any((r.mode, r.align_corners, r.relu) != (first.mode, first.align_corners, first.relu) for r in runners):
        return None
    constants: List[Tensor] = []
    program: List[int] = []
    registers = [len(xs)]

    def constant(t: Optional[Tensor]) -> int:
        if t is None:
            return -1
        constants.append(t)
        return len(constants) - 1

    def register() -> int:
        registers[0] += 1
        return registers[0] - 1

    def conv(src: int, weight: Tensor, bias: Optional[Tensor], geometry: List[int]) -> int:
        dst = register()
        program.extend([CONV, dst, src, constant(weight), constant(bias), *geometry])
        return dst

    merged: Dict[Tuple[int, int], int] = {}
    for group, members, weight, bias, sizes, _ in rows.groups:
        if group.kind == "up":
            y = register()
            program.extend([CONV1X1, y, group.j, constant(weight), constant(bias)])
        else:
            c = members[0].conv
            geometry = _geometry(c.stride, c.padding, c.dilation, 1)
            if geometry is None:
                return None
            y = conv(group.j, weight, bias, geometry)
        parts = [register() for _ in members]
        program.extend([SPLIT, y, len(parts)])
        for dst, size in zip(parts, sizes):
            program.extend([dst, int(size)])
        for m, dst in zip(members, parts):
            if m.goes_on:
                program.extend([RELU, dst])
            merged[(m.i, group.j)] = dst

    for (i, steps), runner in zip(rows.rows, runners):
        inputs: List[int] = []
        for step in steps:
            kind = step[0]
            if kind == "id":
                inputs.append(step[1])
            elif kind == "up":
                _, j, _, slot, f, pointwise = step
                if f is None:
                    inputs.append(merged[slot])
                elif pointwise:
                    dst = register()
                    program.extend([CONV1X1, dst, j, constant(f.weight), constant(f.bias)])
                    inputs.append(dst)
                else:
                    geometry = _geometry(*f.geometry)
                    if geometry is None:
                        return None
                    inputs.append(conv(j, f.weight, f.bias, geometry))
            elif kind == "merged":
                inputs.append(merged[step[1]])
            elif kind == "down":
                _, j, earlier, last, as_term, slot, from_merged = step
                if as_term:
                    return None
                a = merged[slot] if from_merged else j
                for f in (*earlier, last):
                    geometry = _geometry(*f.geometry)
                    if geometry is None:
                        return None
                    a = conv(a, f.weight, f.bias, geometry)
                    if f is not last:
                        program.extend([RELU, a])
                inputs.append(a)
            else:  # a term run as a module
                return None
        program.extend([EXCHANGE, len(inputs), *inputs, *runner.size])
    plan = rows_plan(constants, program, registers[0], list(xs), rows.sources, rows.versions, rows.placed,
                     rows.places, first.mode, first.align_corners, first.relu)
    return NativeRows(plan, rows.bns, [*rows.hook_dicts, *hook_dicts])


__all__ = ["NativeRows", "compile_rows", "run_rows"]
