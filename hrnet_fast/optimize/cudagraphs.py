"""The whole forward as CUDA graphs, one per input shape and dtype, in a
small bounded cache.

For a new key (shape, dtype and layout of the caller's input) the runner
makes a static input buffer in the compute dtype and layout, runs the
forward twice on a side stream (cuDNN picks its engines, Triton tunes, the
allocator settles), then captures one forward into a graph. A call copies
the caller's input into the static buffer (casting and relayouting on the
way), replays the graph and returns the static outputs, which the caller
(OptimizedModule) copies into fresh tensors before handing them out: a later
call never overwrites a result the caller holds.

All graphs share one memory pool: replays are serial on one stream, and
every static input and output stays referenced, so a graph's temporaries
never overlap another graph's live buffers.

When the cache holds `max_entries` graphs, further shapes run without a graph
(the same results, eager speed) and one warning says so; `clear()` frees
every graph. A capture that fails (an operation that synchronises, a library
that cannot be captured) turns graphs off for this module, with a warning,
and the forward runs eagerly from then on.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor


class _Entry:
    __slots__ = ("graph", "static_input", "static_output")

    def __init__(self, graph, static_input: Tensor, static_output: Any):
        self.graph, self.static_input, self.static_output = graph, static_input, static_output


class GraphRunner:
    def __init__(self, forward: Callable[[Tensor], Any], dtype: torch.dtype, channels_last: bool,
                 max_entries: int = 8, warmup: int = 2):
        self.forward = forward
        self.dtype = dtype
        self.channels_last = channels_last
        self.max_entries = max_entries
        self.warmup = warmup
        self.entries: "OrderedDict[Tuple, _Entry]" = OrderedDict()
        self.pool = None
        self.disabled: Optional[str] = None
        self._warned_full = False

    def key(self, x: Tensor) -> Tuple:
        return tuple(x.shape), x.dtype, x.device, x.is_contiguous(memory_format=torch.channels_last)

    def clear(self) -> None:
        self.entries.clear()
        self.pool = None
        self._warned_full = False

    def __len__(self) -> int:
        return len(self.entries)

    def run(self, x: Tensor, eager: Callable[[Tensor], Any]) -> Tuple[Any, bool]:
        """(outputs, whether they are the static buffers of a graph)."""
        if self.disabled is not None:
            return eager(x), False
        key = self.key(x)
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= self.max_entries:
                if not self._warned_full:
                    self._warned_full = True
                    warnings.warn(f"hrnet_fast.optimize: the CUDA graph cache holds {self.max_entries} input shapes "
                                  f"(optimized.graphs.max_entries); input {tuple(x.shape)} and further new shapes "
                                  f"run without a graph. optimized.clear_graphs() frees the captured graphs.",
                                  stacklevel=4)
                return eager(x), False
            entry = self._capture(x)
            if entry is None:
                return eager(x), False
            self.entries[key] = entry
        entry.static_input.copy_(x)
        entry.graph.replay()
        return entry.static_output, True

    def _capture(self, x: Tensor) -> Optional[_Entry]:
        fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
        static_input = torch.empty(x.shape, dtype=self.dtype, device=x.device, memory_format=fmt)
        static_input.copy_(x)
        try:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.forward(static_input)
            torch.cuda.current_stream(x.device).wait_stream(side)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                static_output = self.forward(static_input)
        except Exception as exc:  # noqa: BLE001 - any failed capture: run eagerly
            torch.cuda.synchronize(x.device)
            self.disabled = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            self.clear()
            warnings.warn(f"hrnet_fast.optimize: CUDA graph capture failed ({self.disabled}); this module runs "
                          f"without CUDA graphs", stacklevel=5)
            return None
        return _Entry(graph, static_input, static_output)
