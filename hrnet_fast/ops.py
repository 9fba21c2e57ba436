"""Public functional API: `exchange`, backend choice, and the autograd / fake
registrations of the C++ ops.

Every backend computes the same thing (see hrnet_fast.reference):

    y = act( sum_k interp(inputs[k] * scales[k] + shifts[k], size)
             + sum_m conv2d(a_m, w_m, b_m, stride=2, padding=1) )

The wrapper validates arguments once, turns the optional per-input affines
into dense (K, C) tensors (identity rows are ones / zeros: multiplying by one
is free in a memory-bound kernel and keeps the op schema and its autograd
simple), and calls one registered op. The common call on the C++ backends
(each affine None or one tensor per input, no conv terms) goes straight to
`exchange_lists`, which builds the rows and checks its arguments in C++;
the Python checks run only when it rejects them, to raise the precise error.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import reference as _reference
from ._ext import extension as _extension
from ._ext import import_error as _import_error

MODES = ("nearest", "bilinear")
BACKENDS = ("reference", "cpu", "cuda", "triton")
ConvTerm = Tuple[Tensor, Tensor, Optional[Tensor]]

# Fixed at import: TRITON_INTERPRET only takes effect if set before triton is
# imported, and constants keep `exchange` traceable by torch.compile.
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_C = _extension()
# Looked up once: each torch.ops attribute step costs a Python lookup per call.
_exchange_lists = torch.ops.hrnet_fast.exchange_lists.default if _C is not None else None
_is_compiling = torch.compiler.is_compiling

# Preference among the GPU backends for backend="auto" on CUDA tensors. From
# gpu_check on an H200 (benchmarks/results/2026-11-27-NVIDIA-H200, RESULTS.md):
# the CUDA kernels beat Triton in every exchange case measured, forward 3-7x
# and backward 1-7x at W48 seg stage 4 bf16 channels_last, and the converted
# stage-4 rows with conv terms ran 2x faster with cuDNN convs plus the CUDA
# exchange than with Triton's one-pass conv kernel.
AUTO_CUDA_ORDER = ("cuda", "triton")


def backends() -> Dict[str, bool]:
    """Which backends can run now.

    Example:
        >>> import hrnet_fast
        >>> hrnet_fast.backends()["reference"]
        True
    """
    cuda_ok = torch.cuda.is_available()
    return {
        "reference": True,
        "cpu": _C is not None,
        "cuda": _C is not None and bool(_C.cuda_compiled) and cuda_ok,
        "triton": _HAS_TRITON and (cuda_ok or _TRITON_INTERPRET),
    }


def _unavailable_reason(backend: str) -> str:
    if backend in ("cpu", "cuda") and _C is None:
        return f"the C++ extension hrnet_fast._C is not built or failed to load ({_import_error()!r})"
    if backend == "cuda" and not _C.cuda_compiled:
        return "hrnet_fast._C was built without CUDA (no nvcc or CPU-only torch at build time)"
    if backend == "triton" and not _HAS_TRITON:
        return "triton is not installed"
    return "no CUDA device is available" + (" (set TRITON_INTERPRET=1 before importing triton to run "
                                            "Triton kernels on CPU tensors)" if backend == "triton" else "")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend `exchange` uses for tensors on `device`."""
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"hrnet_fast.exchange: unknown backend {backend!r}; expected one of "
                         f"{('auto',) + BACKENDS}")
    if device.type == "cpu" and backend in ("auto", "cpu") and _C is not None:  # common: no CUDA query
        return "cpu"
    available = backends()
    if backend == "auto":
        if device.type == "cuda":
            for name in AUTO_CUDA_ORDER:
                if available[name]:
                    return name
            return "reference"
        return "cpu" if device.type == "cpu" and available["cpu"] else "reference"
    if not available[backend]:
        raise RuntimeError(f"hrnet_fast.exchange: backend {backend!r} is unavailable: "
                           f"{_unavailable_reason(backend)}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"hrnet_fast.exchange: backend 'cpu' needs CPU tensors, got {device}")
    if backend == "cuda" and device.type != "cuda":
        raise ValueError(f"hrnet_fast.exchange: backend 'cuda' needs CUDA tensors, got {device}")
    if backend == "triton" and device.type != "cuda" and not (_TRITON_INTERPRET and device.type == "cpu"):
        raise ValueError(f"hrnet_fast.exchange: backend 'triton' needs CUDA tensors (or CPU tensors under "
                         f"TRITON_INTERPRET=1), got {device}")
    return backend


def _check_inputs(inputs: Sequence[Tensor], size) -> Tuple[List[Tensor], Tuple[int, int]]:
    # Every tensor attribute read costs a Python-to-C++ round trip, and this
    # runs on every call: each shape is read once.
    if isinstance(inputs, Tensor) or not isinstance(inputs, (list, tuple)):
        raise TypeError("hrnet_fast.exchange: inputs must be a list or tuple of tensors")
    inputs = list(inputs)
    if len(inputs) == 0:
        raise ValueError("hrnet_fast.exchange: needs at least one input")
    shapes = []
    for k, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"hrnet_fast.exchange: inputs[{k}] is {type(x).__name__}, not a Tensor")
        shape = x.shape
        if len(shape) != 4:
            raise ValueError(f"hrnet_fast.exchange: inputs[{k}] must be 4-D (N, C, H, W), got shape "
                             f"{tuple(shape)}")
        shapes.append(shape)
    x0, (n0, c0, h0, w0) = inputs[0], shapes[0]
    dtype, device = x0.dtype, x0.device
    if not dtype.is_floating_point:
        raise TypeError(f"hrnet_fast.exchange: inputs must be floating point, got {dtype}")
    if size is None:
        out_h, out_w = h0, w0
    else:
        if len(size) != 2:
            raise ValueError(f"hrnet_fast.exchange: size must be (H, W), got {size!r}")
        out_h, out_w = size
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"hrnet_fast.exchange: size must be positive, got {tuple(size)}")
    for k, (x, (n, c, h, w)) in enumerate(zip(inputs, shapes)):
        if k > 0:
            if n != n0 or c != c0:
                raise ValueError(f"hrnet_fast.exchange: inputs[{k}] has (N, C) = {(n, c)} but inputs[0] has "
                                 f"{(n0, c0)}")
            if x.dtype != dtype:
                raise ValueError(f"hrnet_fast.exchange: inputs[{k}] is {x.dtype} but inputs[0] is {dtype}")
            if x.device != device:
                raise ValueError(f"hrnet_fast.exchange: inputs[{k}] is on {x.device} but inputs[0] is on "
                                 f"{device}")
        if h > out_h or w > out_w:
            raise ValueError(f"hrnet_fast.exchange: inputs[{k}] is {h}x{w}, larger than the output size "
                             f"{out_h}x{out_w}")
        if h == 0 or w == 0:
            raise ValueError(f"hrnet_fast.exchange: inputs[{k}] has an empty spatial size {(h, w)}")
    return inputs, (out_h, out_w)


def param_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the dense affine: float64 for float64 inputs, else float32
    (half-precision inputs still scale and accumulate in float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_affine(values, name: str, count: int, channels: int, device: torch.device) -> bool:
    """Validates scales or shifts; True when every entry is a tensor (so the
    dense rows are one stack, no identity fill)."""
    if values is None:
        return False
    if isinstance(values, Tensor) or not isinstance(values, (list, tuple)):
        raise TypeError(f"hrnet_fast.exchange: {name} must be None or a list with one entry per input")
    if len(values) != count:
        raise ValueError(f"hrnet_fast.exchange: {name} has {len(values)} entries for {count} inputs")
    complete = True
    for k, v in enumerate(values):
        if v is None:
            complete = False
            continue
        if not isinstance(v, Tensor):
            raise TypeError(f"hrnet_fast.exchange: {name}[{k}] is {type(v).__name__}, not a Tensor or None")
        shape = v.shape
        if len(shape) != 1 or shape[0] != channels:
            raise ValueError(f"hrnet_fast.exchange: {name}[{k}] must have shape ({channels},), got "
                             f"{tuple(shape)}")
        if v.device != device:
            raise ValueError(f"hrnet_fast.exchange: {name}[{k}] is on {v.device} but the inputs are on {device}")
    return complete


# Identity affine rows by (count, channels, fill, dtype, device): constants,
# so they are built once instead of on every call (eager only; under
# torch.compile they are traced as ordinary factory calls).
_IDENTITY_ROWS: Dict[tuple, Tensor] = {}


def _cached_full(shape: Tuple[int, ...], fill: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """torch.full, built once per shape, fill, dtype and device. The ops
    only read these tensors."""
    # Tensors made under inference_mode cannot be saved for backward later.
    key = (shape, fill, dtype, device, torch.is_inference_mode_enabled())
    rows = _IDENTITY_ROWS.get(key)
    if rows is None:
        if len(_IDENTITY_ROWS) > 256:
            _IDENTITY_ROWS.clear()
        rows = _IDENTITY_ROWS[key] = torch.full(shape, fill, dtype=dtype, device=device)
    return rows


def _identity_rows(count: int, channels: int, fill: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    if torch.compiler.is_compiling() or not isinstance(channels, int):
        return torch.full((count, channels), fill, dtype=dtype, device=device)
    return _cached_full((count, channels), fill, dtype, device)


def _dense_affine(values, count: int, channels: int, fill: float, like: Tensor, complete: bool = False) -> Tensor:
    """(count, channels) affine rows; None entries become the identity.
    `complete`: every entry is a tensor (as _check_affine found)."""
    dtype = param_dtype(like.dtype)
    if values is None:
        return _identity_rows(count, channels, fill, dtype, like.device)
    if complete and all(v.dtype == dtype for v in values):  # the common case: one stack, no copies
        return torch.stack(values)
    return torch.stack([torch.full((channels,), fill, dtype=dtype, device=like.device) if v is None
                        else v.to(dtype) for v in values])


def _check_convs(convs: Sequence[ConvTerm], x0: Tensor, size: Tuple[int, int]) -> List[ConvTerm]:
    if isinstance(convs, Tensor) or not isinstance(convs, (list, tuple)):
        raise TypeError("hrnet_fast.exchange: convs must be a list of (a, weight, bias) triples")
    out = []
    for m, term in enumerate(convs):
        if not isinstance(term, (list, tuple)) or len(term) != 3:
            raise TypeError(f"hrnet_fast.exchange: convs[{m}] must be an (a, weight, bias) triple")
        a, w, b = term
        if not isinstance(a, Tensor) or a.dim() != 4:
            raise ValueError(f"hrnet_fast.exchange: convs[{m}] input must be a 4-D tensor")
        if not isinstance(w, Tensor) or w.dim() != 4 or tuple(w.shape[2:]) != (3, 3):
            raise ValueError(f"hrnet_fast.exchange: convs[{m}] weight must be (C_out, C_in, 3, 3), got "
                             f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")
        if w.shape[0] != x0.shape[1] or w.shape[1] != a.shape[1]:
            raise ValueError(f"hrnet_fast.exchange: convs[{m}] weight {tuple(w.shape)} does not map "
                             f"{a.shape[1]} input channels to the output's {x0.shape[1]}")
        if b is not None and (not isinstance(b, Tensor) or tuple(b.shape) != (x0.shape[1],)):
            raise ValueError(f"hrnet_fast.exchange: convs[{m}] bias must be None or ({x0.shape[1]},)")
        if a.shape[0] != x0.shape[0] or a.dtype != x0.dtype or a.device != x0.device:
            raise ValueError(f"hrnet_fast.exchange: convs[{m}] input must match inputs[0] in N, dtype and "
                             f"device")
        landed = ((a.shape[-2] - 1) // 2 + 1, (a.shape[-1] - 1) // 2 + 1)
        if landed != tuple(size):
            raise ValueError(f"hrnet_fast.exchange: convs[{m}] input {a.shape[-2]}x{a.shape[-1]} lands on "
                             f"{landed[0]}x{landed[1]} after a stride-2 conv, not on the output size "
                             f"{size[0]}x{size[1]}")
        out.append((a, w, b))
    return out


# Backends with a one-pass conv kernel register it here (name -> callable
# taking the dense arguments plus the conv terms); the others get the conv
# terms as extra same-size inputs whose shift is the bias.
_CONV_KERNELS: Dict[str, Callable] = {}


def exchange(
    inputs: Sequence[Tensor],
    scales: Optional[Sequence[Optional[Tensor]]] = None,
    shifts: Optional[Sequence[Optional[Tensor]]] = None,
    *,
    convs: Sequence[ConvTerm] = (),
    size: Optional[Tuple[int, int]] = None,
    mode: str = "nearest",
    align_corners: bool = False,
    relu: bool = True,
    backend: str = "auto",
) -> Tensor:
    """Fused HRNet exchange: affine, upsample to `size`, stride-2 conv terms,
    sum and ReLU in one kernel.

    Args:
        inputs: tensors (N, C, h_k, w_k) with the same N, C, dtype and device;
            each h_k x w_k no larger than `size`, which defaults to inputs[0]'s.
        scales, shifts: None, or one entry per input, each None or a (C,)
            tensor (a folded BatchNorm: y = x * scale + shift).
        convs: (a, weight, bias) triples adding conv2d(a, weight, bias,
            stride=2, padding=1), whose output must be `size`.
        mode: "nearest" or "bilinear" (size-based, as F.interpolate(size=...)).
        align_corners: for bilinear, as in F.interpolate.
        relu: apply ReLU to the sum.
        backend: "auto", "reference", "cpu", "cuda" or "triton".

    Example:
        >>> import torch, hrnet_fast
        >>> x0, x1 = torch.randn(2, 8, 15, 9), torch.randn(2, 8, 8, 5)
        >>> s, b = torch.rand(8) + 0.5, torch.randn(8)
        >>> y = hrnet_fast.exchange([x0, x1], [None, s], [None, b], mode="bilinear")
        >>> torch.allclose(y, hrnet_fast.reference([x0, x1], [None, s], [None, b], mode="bilinear"), atol=1e-5)
        True
    """
    if type(convs) in (list, tuple) and not convs:
        out = _fast_call(inputs, scales, shifts, size, mode, align_corners, relu, backend)
        if out is not None:
            return out
    inputs, (out_h, out_w) = _check_inputs(inputs, size)
    if mode not in MODES:
        raise ValueError(f"hrnet_fast.exchange: mode must be one of {MODES}, got {mode!r}")
    align_corners = bool(align_corners) and mode == "bilinear"
    x0 = inputs[0]
    channels = x0.shape[1]
    scales_complete = _check_affine(scales, "scales", len(inputs), channels, x0.device)
    shifts_complete = _check_affine(shifts, "shifts", len(inputs), channels, x0.device)
    convs = [] if isinstance(convs, (list, tuple)) and not convs else _check_convs(convs, x0, (out_h, out_w))
    backend = resolve_backend(backend, x0.device)
    if backend == "reference":
        return _reference.exchange(inputs, scales, shifts, convs=convs, size=(out_h, out_w), mode=mode,
                                   align_corners=align_corners, relu=relu)
    dense_scales = _dense_affine(scales, len(inputs), channels, 1.0, x0, scales_complete)
    dense_shifts = _dense_affine(shifts, len(inputs), channels, 0.0, x0, shifts_complete)
    if convs and backend in _CONV_KERNELS:
        return _CONV_KERNELS[backend](inputs, dense_scales, dense_shifts, convs, [out_h, out_w], mode,
                                      align_corners, relu)
    if convs:
        # The convolution runs as a library call (oneDNN / cuDNN) and its
        # output joins the fused sum as one more same-size input.
        ones = torch.ones((len(convs), channels), dtype=dense_scales.dtype, device=x0.device)
        biases = torch.stack([torch.zeros(channels, dtype=dense_shifts.dtype, device=x0.device) if b is None
                              else b.to(dense_shifts.dtype) for _, _, b in convs])
        inputs = inputs + [F.conv2d(a, w.to(a.dtype), None, stride=2, padding=1) for a, w, _ in convs]
        dense_scales = torch.cat([dense_scales, ones])
        dense_shifts = torch.cat([dense_shifts, biases])
    return _KERNELS[backend](inputs, dense_scales, dense_shifts, [out_h, out_w], mode, align_corners, relu)


def _takes_list_op(backend: str, is_cpu: bool, is_cuda: bool) -> bool:
    """Whether the C++ backend of the tensors' device runs this call:
    exchange_lists dispatches on the device, so it serves "cpu" and "cuda",
    and "auto" where auto resolves to them (always on the CPU; on CUDA when
    the extension has CUDA kernels and they come first in AUTO_CUDA_ORDER)."""
    if is_cpu:
        return backend in ("auto", "cpu")
    if is_cuda:
        return backend == "cuda" or (backend == "auto" and AUTO_CUDA_ORDER[0] == "cuda" and _C.cuda_compiled)
    return False


def _fast_call(inputs, scales, shifts, size, mode, align_corners, relu, backend) -> Optional[Tensor]:
    """The common call in a few microseconds: a C++ backend, no conv terms,
    each affine None or a list of None / (C,) tensors. `exchange_lists`
    builds the dense rows and checks every argument itself; None entries
    become cached identity rows. Returns None where this does not apply, or
    where the op rejects the arguments: the full path then raises its
    precise error. Not under torch.compile, which traces the full path."""
    if _exchange_lists is None or type(inputs) not in (list, tuple) or not inputs or _is_compiling():
        return None
    x0 = inputs[0]
    if not isinstance(x0, Tensor) or mode not in MODES:
        return None
    if not _takes_list_op(backend, x0.is_cpu, x0.is_cuda):
        return None
    shape = x0.shape
    if len(shape) != 4:
        return None
    # No lists or tuples built on the common path: each container object
    # counts towards Python's next garbage collection, which showed up at
    # 10 % of a small call's profile.
    scales = _list_rows(scales, len(inputs), 1.0, x0)
    shifts = _list_rows(shifts, len(inputs), 0.0, x0)
    if scales is None or shifts is None:
        return None
    if size is None:
        # A tuple of ints: the op parses a torch.Size slice about 1 us slower.
        size = (shape[2], shape[3])
    try:
        return _exchange_lists(inputs, scales, shifts, size, mode, bool(align_corners) and mode == "bilinear",
                               bool(relu))
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None


def _list_rows(given, count: int, fill: float, x0: Tensor):
    """exchange_lists' form of one affine argument: () for the identity, the
    caller's list when it holds a tensor per input, cached identity rows in
    place of None entries; None when the fast path does not apply."""
    if given is None:
        return ()
    if type(given) not in (list, tuple) or len(given) != count:
        return None
    for r in given:
        if r is None:
            break
    else:
        return given
    if all(r is None for r in given):
        return ()
    # A cached (C,) row stands in for each None entry: the op only reads it,
    # and its gradient row goes nowhere (it needs none).
    identity = _cached_full((x0.shape[1],), fill, param_dtype(x0.dtype), x0.device)
    return [identity if r is None else r for r in given]


def _native(inputs, scales, shifts, size, mode, align_corners, relu):
    return torch.ops.hrnet_fast.exchange(inputs, scales, shifts, size, mode, align_corners, relu)


def _triton(inputs, scales, shifts, size, mode, align_corners, relu):
    from . import triton as _triton_backend  # imported on first use: importing triton is slow

    return _triton_backend.exchange(inputs, scales, shifts, size, mode, align_corners, relu)


def _triton_conv(inputs, scales, shifts, convs, size, mode, align_corners, relu):
    from . import triton as _triton_backend

    return _triton_backend.exchange_conv(inputs, scales, shifts, convs, size, mode, align_corners, relu)


_KERNELS: Dict[str, Callable] = {"cpu": _native, "cuda": _native, "triton": _triton}
_CONV_KERNELS["triton"] = _triton_conv


# ---------------------------------------------------------------------------
# Fake kernels of the C++ ops (schemas in csrc/ops.cpp; their autograd is in
# csrc/autograd/), and the autograd formula the Python-defined Triton ops use.
# ---------------------------------------------------------------------------

def follow_format(t: Tensor) -> torch.memory_format:
    """Memory format of a result that follows `t`; the same rule as the C++
    output_format(), so fake and real strides agree."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def exchange_fake(inputs, scales, shifts, size, mode, align_corners, relu):
    x0 = inputs[0]
    return torch.empty((x0.shape[0], x0.shape[1], size[0], size[1]), dtype=x0.dtype, device=x0.device,
                       memory_format=follow_format(x0))


def exchange_backward_fake(grad_out, out, inputs, scales, mode, align_corners, relu):
    grads = [torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=follow_format(x)) for x in inputs]
    return grads, torch.empty_like(scales, memory_format=torch.contiguous_format), \
        torch.empty_like(scales, memory_format=torch.contiguous_format)


def setup_exchange_context(ctx, inputs, output):
    tensors, scales, _shifts, _size, mode, align_corners, relu = inputs
    ctx.save_for_backward(output, scales, *tensors)
    ctx.options = (mode, align_corners, relu)


def make_exchange_backward(backward_op):
    """Autograd formula for a Python-defined op with the `exchange` schema
    (the Triton backend): `backward_op` has the `exchange_backward` schema.
    The C++ op's equivalent is csrc/autograd/exchange_autograd.cpp."""

    def backward(ctx, grad):
        output, scales, *tensors = ctx.saved_tensors
        mode, align_corners, relu = ctx.options
        grad_inputs, grad_scales, grad_shifts = backward_op(grad, output, tensors, scales, mode, align_corners,
                                                            relu)
        return list(grad_inputs), grad_scales, grad_shifts, None, None, None, None

    return backward


# Autograd of the C++ op is registered in C++ (csrc/autograd/), where it
# costs a few microseconds per call instead of the Python layer's hundreds.
if _C is not None:
    torch.library.register_fake("hrnet_fast::exchange")(exchange_fake)
    torch.library.register_fake("hrnet_fast::exchange_backward")(exchange_backward_fake)
    torch.library.register_fake("hrnet_fast::exchange_lists")(exchange_fake)
