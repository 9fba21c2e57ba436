"""The exchange call as every backend receives it, and the rules it obeys.

    y = act( sum_k interp(inputs[k] * scales[k] + shifts[k], size)
             + sum_m conv2d(a_m, w_m, b_m, stride=2, padding=1) )

Two kinds of rule, each stated once:

- *structure* (this module, `make_call`): the arguments are lists of
  tensors, triples and ints -- what the dispatcher's schema cannot say
  clearly. TypeError.
- *values* (C++, csrc/checks.cpp): shapes, dtypes, devices, sizes and the
  mode. The CPU and CUDA kernels run them themselves; everything else (the
  reference and Triton backends, the fake kernels) runs them through the
  `hrnet_fast::exchange_check` op (`check_values`). ValueError, or TypeError
  for a wrong dtype.

So a bad argument gets one message whichever backend was asked for, and a
call enters the backend's op once.

This module sits below the public API and the backends: it imports
neither.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor

from ._ext import extension

MODES = ("nearest", "bilinear")
# The op's argument types (hrnet_fast.exchange, hrnet_fast.reference).
ConvTerm = Tuple[Tensor, Tensor, Optional[Tensor]]
Rows = Optional[Sequence[Optional[Tensor]]]  # scales or shifts: None, or one entry per input
Size = Tuple[int, int]
_Tensor = torch.Tensor
_SIZE_TYPES = (int, torch.SymInt)


class ExchangeCall(NamedTuple):
    """One normalised call of `hrnet_fast.exchange`.

    `scales` / `shifts` are [] for the identity, else one entry per input,
    each None (the identity) or a (C,) tensor. `convs` holds (a, weight,
    bias) triples. `size` is the output (H, W).
    """
    inputs: List[Tensor]
    scales: List[Optional[Tensor]]
    shifts: List[Optional[Tensor]]
    convs: List[ConvTerm]
    size: Tuple[int, int]
    mode: str
    align_corners: bool
    relu: bool

    @property
    def first(self) -> Tensor:
        return self.inputs[0]


def _affine_list(values, name: str) -> list:
    if values is None:
        return []
    if type(values) is not list and type(values) is not tuple:
        raise TypeError(f"hrnet_fast.exchange: {name} must be None or a list with one entry per input, got "
                        f"{type(values).__name__}")
    for v in values:
        if v is not None and not isinstance(v, _Tensor):
            k = next(i for i, u in enumerate(values) if u is not None and not isinstance(u, _Tensor))
            raise TypeError(f"hrnet_fast.exchange: {name}[{k}] is {type(v).__name__}, not a Tensor or None")
    return values if type(values) is list else list(values)


def _conv_list(convs) -> List[ConvTerm]:
    if not isinstance(convs, (list, tuple)):
        raise TypeError("hrnet_fast.exchange: convs must be a list of (a, weight, bias) triples, got "
                        f"{type(convs).__name__}")
    out = []
    for m, term in enumerate(convs):
        if not isinstance(term, (list, tuple)) or len(term) != 3:
            raise TypeError(f"hrnet_fast.exchange: convs[{m}] must be an (a, weight, bias) triple")
        a, w, b = term
        if not isinstance(a, _Tensor) or not isinstance(w, _Tensor) or not (b is None or isinstance(b, _Tensor)):
            raise TypeError(f"hrnet_fast.exchange: convs[{m}] must hold (Tensor, Tensor, Tensor or None), got "
                            f"({type(a).__name__}, {type(w).__name__}, {type(b).__name__})")
        out.append((a, w, b))
    return out


def _size(size, inputs) -> Tuple[int, int]:
    if size is None:
        if inputs:
            shape = inputs[0].shape
            if len(shape) >= 2:
                return shape[-2], shape[-1]
        return 1, 1  # the value check reports the missing or malformed input
    if type(size) is not tuple:
        if not isinstance(size, (list, tuple, torch.Size)):
            raise TypeError(f"hrnet_fast.exchange: size must be None or (H, W) ints, got {size!r}")
        size = tuple(size)
    if len(size) != 2 or not all(_is_size(v) for v in size):
        raise TypeError(f"hrnet_fast.exchange: size must be None or (H, W) ints, got {size!r}")
    return size


def _is_size(v) -> bool:
    """An int, a SymInt, or (torch.jit.trace records sizes as tensors) a
    0-dim integer tensor."""
    if isinstance(v, _SIZE_TYPES):
        return not isinstance(v, bool)
    return isinstance(v, _Tensor) and v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool


_new_call = tuple.__new__


def make_call(inputs: Sequence[Tensor], scales=None, shifts=None, convs=(), size=None, mode: str = "nearest",
              align_corners: bool = False, relu: bool = True) -> ExchangeCall:
    """The call in normal form, after the structural checks (TypeError).
    Values are not looked at here: see `check_values`."""
    # Runs on every call (a few hundred nanoseconds matter on the small
    # branches): reads no tensor attribute but inputs[0]'s shape, and only
    # for the default size.
    if type(inputs) is not list:
        if type(inputs) is not tuple:
            raise TypeError(f"hrnet_fast.exchange: inputs must be a list or tuple of tensors, got "
                            f"{type(inputs).__name__}")
        inputs = list(inputs)
    for x in inputs:
        if not isinstance(x, _Tensor):
            k = next(i for i, u in enumerate(inputs) if not isinstance(u, _Tensor))
            raise TypeError(f"hrnet_fast.exchange: inputs[{k}] is {type(x).__name__}, not a Tensor")
    if type(mode) is not str:
        raise TypeError(f"hrnet_fast.exchange: mode must be a string, got {type(mode).__name__}")
    convs = _conv_list(convs) if type(convs) is not tuple or convs else []
    return _new_call(ExchangeCall, (inputs, _affine_list(scales, "scales"), _affine_list(shifts, "shifts"), convs,
                                    _size(size, inputs), mode, align_corners is True and mode == "bilinear"
                                    or (bool(align_corners) and mode == "bilinear"), relu is True or bool(relu)))


def check_values(call: ExchangeCall) -> None:
    """The value rules (csrc/checks.cpp) on `call`, through the
    hrnet_fast::exchange_check op: it only reads metadata, so it runs on
    real, meta and fake tensors and under symbolic shapes, and dispatches
    nothing below it. Without the compiled extension only the structural
    rules hold, and PyTorch's own ops raise on the rest."""
    if extension() is None:
        return
    conv_inputs = [a for a, _, _ in call.convs]
    conv_weights = [w for _, w, _ in call.convs]
    conv_biases = [b for _, _, b in call.convs]
    torch.ops.hrnet_fast.exchange_check(call.inputs, call.scales, call.shifts, conv_inputs, conv_weights,
                                        conv_biases, list(call.size), call.mode)


def has_tangent(call: ExchangeCall) -> bool:
    """Whether a tensor of `call` carries a forward-mode AD tangent
    (torch.autograd.forward_ad, torch.func.jvp). With no dual level open,
    the common case, one attribute read."""
    if _forward_ad._current_level < 0:
        return False
    tensors = [*call.inputs, *call.scales, *call.shifts, *(t for term in call.convs for t in term)]
    return any(t is not None and _forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def follow_format(t: Tensor) -> torch.memory_format:
    """Memory format of a result that follows `t`: channels_last when `t` is
    unambiguously channels_last. The same rule as the C++ output_format()."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def affine_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the affine rows and per-channel reductions: float64 for
    float64 inputs, else float32 (half precision scales and accumulates in
    float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def backward_dtype(grad_out: Tensor, out: Optional[Tensor]) -> torch.dtype:
    """The inputs' dtype in the backward: out's, or grad_out's when out is
    not given (the C++ backward_dtype; grad_out is cast to it)."""
    return out.dtype if out is not None else grad_out.dtype


def saved_layout(inputs: Sequence[Tensor]) -> Tuple[List[int], List[bool]]:
    """What the backward keeps of inputs it does not read: (h, w) of each,
    flattened, and whether each is channels_last (its gradient's format)."""
    sizes: List[int] = []
    for x in inputs:
        sizes += [x.shape[2], x.shape[3]]
    return sizes, [follow_format(x) == torch.channels_last for x in inputs]


def landed_size(shape: Sequence[int]) -> Tuple[int, int]:
    """Where a stride-2, padding-1 3x3 conv of an input of `shape` lands."""
    return (shape[-2] - 1) // 2 + 1, (shape[-1] - 1) // 2 + 1
