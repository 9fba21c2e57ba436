"""Shared case generation for exchange tests: random inputs (never zeros),
random affines, and the shapes that exercise the index math."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

# (input sizes, output size): odd sizes, powers of two, 1x1, one-axis-only.
SHAPES = [
    ([(15, 9), (8, 5)], (15, 9)),
    ([(33, 17), (17, 9), (9, 5), (5, 3)], (33, 17)),
    ([(7, 7), (1, 1)], (7, 7)),
    ([(16, 12), (8, 6), (4, 3), (2, 2)], (16, 12)),
    ([(3, 4)], (6, 9)),
    ([(8, 9), (8, 5)], (8, 9)),
    # Several same-size inputs: summed in one pass (all same: written
    # directly; with a smaller input: into an accumulator), and more than the
    # four that pass unrolls.
    ([(6, 5)] * 4, (6, 5)),
    ([(9, 8)] * 3 + [(5, 4)], (9, 8)),
    ([(5, 7)] * 5, (5, 7)),
    ([(7, 6)] * 6 + [(4, 3)], (7, 6)),
]
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]


def make_case(shapes: Sequence[Tuple[int, int]], *, n: int = 2, c: int = 5, dtype=torch.float32,
              channels_last: bool = False, affine: bool = True, partial_affine: bool = False,
              device: str = "cpu"):
    xs = [torch.randn(n, c, h, w, dtype=dtype, device=device) for h, w in shapes]
    if channels_last:
        xs = [x.to(memory_format=torch.channels_last) for x in xs]
    scales: Optional[List[Optional[torch.Tensor]]] = None
    shifts: Optional[List[Optional[torch.Tensor]]] = None
    if affine:
        pdtype = torch.float64 if dtype == torch.float64 else torch.float32
        scales = [torch.rand(c, dtype=pdtype, device=device) + 0.5 for _ in shapes]
        shifts = [torch.randn(c, dtype=pdtype, device=device) for _ in shapes]
        if partial_affine:
            scales[0] = None
            shifts[-1] = None
    return xs, scales, shifts


def requires_grad(tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def nearest_adjoint(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The adjoint of F.interpolate(x, grad's size, mode="nearest") applied
    to grad: each output's gradient added to the source the forward reads
    (found by interpolating x's pixel numbers, same dtype, layout and
    channels). Autograd through F.interpolate is not this where ATen's
    float64 CPU forward takes its float64 index formula: its backward kernel
    has only the float32 one (kernels/interp.h)."""
    n, c, h, w = x.shape
    iota = torch.arange(h * w, dtype=x.dtype, device=x.device).view(1, 1, h, w).expand(n, c, h, w)
    iota = iota.contiguous(memory_format=torch.channels_last if x.is_contiguous(
        memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format)
    source = torch.nn.functional.interpolate(iota, size=tuple(grad.shape[-2:]), mode="nearest").long()
    out = torch.zeros(n, c, h * w, dtype=grad.dtype, device=grad.device)
    return out.scatter_add_(2, source.flatten(2), grad.flatten(2)).view(n, c, h, w)


def backward_inputs(xs: Sequence[torch.Tensor], scales: Sequence[Optional[torch.Tensor]]):
    """The backward ops' input arguments for a call with inputs xs and
    scales, as autograd passes them: (inputs, given only where a scale is;
    their (h, w) flattened; whether each is channels_last)."""
    from hrnet_fast.contract import saved_layout

    sizes, channels_last = saved_layout(xs)
    kept = [x if scales and scales[k] is not None else None for k, x in enumerate(xs)]
    return kept, sizes, channels_last


def saved_bytes(fn):
    """fn()'s result and the bytes autograd keeps for its graph: the
    distinct storages of the saved tensors (saved_tensors_hooks)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn()
    return y, sum(storages.values())


def assert_nearest_like_interpolate(backend: str, source: Tuple[int, int], size: Tuple[int, int], c: int,
                                    channels_last: bool, dtype: torch.dtype, device: str = "cpu") -> None:
    """One input resized to `size` in nearest mode, no affine, no ReLU: the
    pixels F.interpolate picks on that device, bit for bit."""
    import hrnet_fast

    x = torch.randn(2 if backend != "triton" else 1, c, *source, dtype=dtype, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = hrnet_fast.exchange([x], size=size, mode="nearest", relu=False, backend=backend)
    assert torch.equal(y, torch.nn.functional.interpolate(x, size=size, mode="nearest"))


def _x(*shape, **kw):
    return torch.randn(*shape, **kw)


# Bad calls of hrnet_fast.exchange: make() -> (args, kwargs), the exception
# type and the message every backend raises (None: a valid call).
BAD_CALLS = [
    (lambda: (([],), {}), ValueError, "at least one input"),
    (lambda: ((_x(1, 2, 4, 4),), {}), TypeError, "list or tuple"),
    (lambda: (([_x(2, 4, 4)],), {}), ValueError, "4-D"),
    (lambda: (([_x(1, 2, 4, 4), _x(2, 2, 2, 2)],), {}), ValueError, r"\(N, C\)"),
    (lambda: (([_x(1, 2, 4, 4), _x(1, 3, 2, 2)],), {}), ValueError, r"\(N, C\)"),
    (lambda: (([_x(1, 2, 4, 4), _x(1, 2, 2, 2, dtype=torch.float64)],), {}), ValueError, "torch.float64 but inputs"),
    (lambda: (([_x(1, 2, 4, 4), _x(1, 2, 8, 8)],), {}), ValueError, "larger than the output size"),
    (lambda: (([_x(1, 2, 4, 4)],), {"size": (2, 2)}), ValueError, "larger than the output size"),
    (lambda: (([_x(1, 2, 6, 5), _x(1, 2, 7, 5)],), {"size": (6, 5)}), ValueError,
     "only mode='bilinear' resizes down"),
    (lambda: (([_x(1, 2, 4, 4)],), {"size": (4,)}), TypeError, "size must be None or"),
    (lambda: (([_x(1, 2, 4, 4)],), {"size": (4.0, 4)}), TypeError, "size must be None or"),
    (lambda: (([_x(1, 2, 4, 4)],), {"size": (0, 4)}), ValueError, "size must be positive"),
    (lambda: (([_x(1, 2, 4, 4)], [torch.ones(2, dtype=torch.int64)]), {}), TypeError,
     r"scales\[0\] must be floating point, got torch.int64"),
    (lambda: (([_x(1, 2, 4, 4), _x(1, 2, 2, 2, device="meta")],), {}), ValueError,
     r"is on meta but inputs\[0\] is on cpu"),
    (lambda: (([_x(1, 2, 4, 4)], [torch.ones(2, device="meta")]), {}), ValueError, r"scales\[0\] is on meta"),
    (lambda: (([_x(1, 2, 4, 4)], None, [torch.ones(2, device="meta")]), {}), ValueError, r"shifts\[0\] is on meta"),
    (lambda: (([_x(1, 2, 4, 4)],), {"mode": "bicubic"}), ValueError, "mode must be"),
    (lambda: (([_x(1, 2, 4, 4)], [torch.ones(3)]), {}), ValueError, r"scales\[0\] must have shape \(2,\)"),
    (lambda: (([_x(1, 2, 4, 4)], [torch.ones(2), None]), {}), ValueError, "2 entries for 1 inputs"),
    (lambda: (([_x(1, 2, 4, 4)], None, [torch.ones(2, 1)]), {}), ValueError, r"shifts\[0\]"),
    (lambda: (([_x(1, 2, 4, 4)], torch.ones(1, 2)), {}), TypeError, "scales must be None or a list"),
    (lambda: (([_x(1, 2, 4, 4)], [3.0]), {}), TypeError, "not a Tensor"),
    (lambda: (([torch.ones(1, 2, 4, 4, dtype=torch.int64)],), {}), TypeError, "floating point"),
    (lambda: (([_x(1, 2, 4, 4), "x"],), {}), TypeError, "not a Tensor"),
    (lambda: (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 3, 3, 3), None)]}), ValueError, None),
    (lambda: (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 10, 10), _x(2, 3, 3, 3), None)]}), ValueError,
     "lands on 5x5"),
    (lambda: (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 4, 3, 3), None)]}), ValueError,
     "input channels"),
    (lambda: (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 3, 1, 1), None)]}), ValueError,
     r"\(C_out, C_in, 3, 3\)"),
    (lambda: (([_x(1, 2, 4, 4)],), {"convs": [(_x(1, 3, 8, 8), _x(2, 3, 3, 3))]}), TypeError, "triple"),
    (lambda: (([_x(1, 2, 4, 4)],), {"convs": _x(3, 3)}), TypeError, "convs must be a list"),
    # rejected by the C++ fast path first: the full path names the problem
    (lambda: (([_x(1, 2, 4, 4)],), {"size": (-4, 4)}), ValueError, "size must be positive"),
    (lambda: (([_x(1, 2, 4, 4)], [torch.ones(2)], [torch.zeros(2), torch.zeros(2)]), {}), ValueError,
     "2 entries for 1 inputs"),
    (lambda: (([_x(1, 2, 4, 4), _x(1, 2, 3, 3)], [torch.ones(2), torch.ones(3)]), {}), ValueError, r"scales\[1\]"),
]
