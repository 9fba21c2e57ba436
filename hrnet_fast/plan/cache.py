"""The eval programs of one HRNet module: compiled per input signature,
kept while their guard holds, run by the Python executor and, once that
has run a program, by the C++ executor where it can.

Example:
    >>> from hrnet_fast.plan.cache import ProgramCache
    >>> cache = ProgramCache()
    >>> cache.native is None and len(cache) == 0
    True
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Optional, Sequence

from torch import Tensor

from . import native
from .executor import PythonExecutor
from .program import Program, Signature


class _Entry:
    __slots__ = ("executor", "native", "encoded")

    def __init__(self, program: Program):
        self.executor = PythonExecutor(program)
        self.native: Optional[tuple] = None
        self.encoded = False


class ProgramCache:
    """Programs by input signature (at most `max_entries`, least recently
    used dropped first). `native` is the C++ form of the program that ran
    last, for a caller that tries it before anything else (None: none)."""

    def __init__(self, max_entries: int = 1, one_call: bool = True, enabled: bool = True):
        self.max_entries = max_entries
        self.one_call = one_call
        self.enabled = enabled
        self.entries: "OrderedDict[Signature, _Entry]" = OrderedDict()
        self.native: Optional[tuple] = None

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()
        self.native = None

    @property
    def program(self) -> Optional[Program]:
        """The program that ran last."""
        return next(reversed(self.entries.values())).executor.program if self.entries else None

    def run(self, xs: Sequence[Tensor], compile: Callable[[], Optional[Program]],
            hook_dicts: Sequence[dict] = ()) -> Optional[List[Tensor]]:
        """The outputs of the program for `xs`, compiled by `compile()` when
        there is none whose guard holds; None when the cache is disabled or
        `compile()` gives none (the caller runs its general path). `hook_dicts`: see native.encode."""
        if not self.enabled:
            return None
        sig = Signature.of(xs)
        entry = self.entries.get(sig)
        if entry is not None and not entry.executor.program.holds():
            del self.entries[sig]
            entry = None
        if entry is None:
            program = compile()
            if program is None:
                self.native = None
                return None
            entry = self.entries[sig] = _Entry(program)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(sig)
        outs = entry.executor.run(xs)
        if not entry.encoded and self.one_call:
            # After a first run of the program: every row is bound.
            entry.encoded = True
            entry.native = native.encode(entry.executor, xs, hook_dicts)
        self.native = entry.native if self.one_call else None
        return outs


__all__ = ["ProgramCache"]
