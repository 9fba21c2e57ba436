"""The C++ executor of a Program (csrc/plan/executor.cpp): the program
encoded once as integers and constants, then every call one C function,
`run(state, xs)`, which checks the program's guard in C and returns the
outputs, or None when anything it was built for does not hold (the caller
then takes its Python path). This is the only module that uses the
extension's private `plan_build` / `plan_run`.

A program is encoded after a first run by the Python executor, when every
row's exchange has been checked once and bound to its backend: it can run
in C++ when every row goes straight to the C++ op (backend.native.OpRunner,
no conv terms in the kernel) and no summand runs as a module.

Example:
    >>> import torch, hrnet_fast
    >>> m = hrnet_fast.models.create("w18_small_v1", "pose").eval()
    >>> _ = hrnet_fast.convert(m, backend="cpu")
    >>> with torch.no_grad():
    ...     _ = m(torch.randn(1, 3, 64, 64)); _ = m(torch.randn(1, 3, 64, 64))
    >>> fx = hrnet_fast.fused_modules(m)[0].fused_exchange
    >>> fx.one_call is not None or not hrnet_fast.backends()["cpu"]
    True
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from .._ext import extension
from ..backend.native import OpRunner
from .executor import PythonExecutor
from .program import Conv, Exchange, Module, Program, Relu, Resample, Split

_C = extension()
build: Optional[Callable[..., Any]] = _C.plan_build if _C is not None else None
run: Optional[Callable[[tuple, Sequence[Tensor]], Optional[List[Tensor]]]] = \
    _C.plan_run if _C is not None else None

# Opcodes, engines and modes of csrc/plan/executor.cpp.
CONV, SPLIT, RELU, RESAMPLE, EXCHANGE = range(5)
ENGINES: Dict[str, int] = {"aten": 0, "gemm": 1, "mkldnn": 2, "cudnn": 3}
MODES: Dict[str, int] = {"nearest": 0, "bilinear": 1}


def encode(executor: PythonExecutor, xs: Sequence[Tensor], hook_dicts: Sequence[dict] = ()) -> Optional[tuple]:
    """The state `run(state, xs)` takes for the program `executor` has run
    once on `xs`, or None when some part must stay in Python. `hook_dicts`:
    more hook dicts that must be empty for it to run (a caller that skips
    nn.Module.__call__: its own and the global ones)."""
    program: Program = executor.program
    if build is None or xs[0].device.type not in ("cpu", "cuda"):
        return None
    if not executor.runners or not all(isinstance(r, OpRunner) for r in executor.runners):
        return None
    constants: List[Tensor] = []
    code: List[int] = []

    def constant(t: Optional[Tensor]) -> int:
        if t is None:
            return -1
        constants.append(t)
        return len(constants) - 1

    for ins in program.code:
        if isinstance(ins, Conv):
            code.extend([CONV, ins.dst, ins.src, constant(ins.weight), constant(ins.bias), ENGINES[ins.engine],
                         int(ins.relu), *ins.stride, *ins.padding, *ins.dilation, ins.groups])
        elif isinstance(ins, Split):
            code.extend([SPLIT, ins.src, len(ins.dsts)])
            for dst, size in zip(ins.dsts, ins.sizes):
                code.extend([dst, size])
        elif isinstance(ins, Relu):
            code.extend([RELU, ins.reg])
        elif isinstance(ins, Resample):
            code.extend([RESAMPLE, ins.dst, ins.src, *ins.size, MODES[ins.mode], int(ins.align_corners)])
        elif isinstance(ins, Exchange) and not ins.convs:
            shifts = ins.shifts or (None,) * len(ins.inputs)
            code.extend([EXCHANGE, len(ins.inputs), *ins.inputs, *(constant(s) for s in shifts), *ins.size,
                         MODES[ins.mode], int(ins.align_corners), int(ins.relu)])
        else:  # a module, or conv terms the op computes itself
            return None
    guard = program.guard
    if guard is not None and any(guard.hooked):
        return None  # the C++ side checks that hook dicts are empty
    tensors = guard.tensors if guard is not None else []
    built = build(constants, code, program.registers, list(xs), tensors,
                  guard.versions if guard is not None else [], guard.places if guard is not None else [])
    owned = tuple(v for triple in guard.owned for v in triple) if guard is not None else ()
    bns = guard.bns if guard is not None else ()
    dicts = (*(guard.hook_dicts if guard is not None else ()), *hook_dicts)
    return built, owned, tuple(bns), tuple(dicts), RemovableHandle


def runs_natively(state: Optional[tuple]) -> bool:
    return state is not None


__all__ = ["encode", "run"]
