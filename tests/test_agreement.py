"""Every way a converted or optimized HRNet module can run its exchange gives
what the unconverted module gives: every execution path x every layout
convert accepts x float32 / float64 x NCHW / channels_last x odd sizes x
no_grad / inference_mode / grad.

Paths:
    terms     the general path (FusedExchange.eval_program = False)
    python    the eval program run by the Python executor
    native    the eval program run as one C++ call (checked that it did)
    optimize  hrnet_fast.optimize's module for the same layout

Under grad mode a converted module runs its terms whatever it is asked (the
program is for inference), so python / native are not combined with grad;
optimize's module computes without autograd in every mode.
"""
from __future__ import annotations

import copy
import itertools
from typing import List

import pytest
import torch

import hrnet_fast
from hrnet_fast.optimize.graph import Builder
from hrnet_fast.optimize.report import Report
from hrnet_fast.optimize.settings import resolve
from layouts import CHANNELS, LAYOUTS, SIZES
from test_convert_common import loss_of, randomize_bn

PATHS = ("terms", "python", "native", "optimize")
GRAD_MODES = ("no_grad", "inference_mode", "grad")
CASES = [c for c in itertools.product(LAYOUTS, (torch.float32, torch.float64), ("nchw", "channels_last"), PATHS,
                                      GRAD_MODES)
         if not (c[4] == "grad" and c[3] in ("python", "native"))]


def _ids(case):
    layout, dtype, fmt, path, grad = case
    return f"{layout}-{str(dtype)[6:]}-{fmt}-{path}-{grad}"


def _inputs(layout: str, dtype, fmt: str, grad: bool) -> List[torch.Tensor]:
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    xs = [torch.randn(2, c, h, w, dtype=dtype).to(memory_format=memory_format)
          for c, (h, w) in zip(CHANNELS, SIZES[layout])]
    return [x.requires_grad_() for x in xs] if grad else xs


def _context(grad: str):
    return {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode, "grad": torch.enable_grad}[grad]()


def _runner(ref: torch.nn.Module, path: str):
    if path == "optimize":
        settings = resolve(ref, None, None, None, None, "auto")
        return Builder(settings, Report("", "", "", False, False)).build(copy.deepcopy(ref))
    fused = hrnet_fast.convert(copy.deepcopy(ref))
    fx = hrnet_fast.fused_modules(fused)[0].fused_exchange
    fx.eval_program = path != "terms"
    fx.one_call_eval = path == "native"
    return fused


def _tolerance(dtype, scale: float):
    # float32: folding each BN into its conv and summing in another order
    # move the last bits of every summand; float64 agrees to rounding.
    if dtype == torch.float64:
        return dict(rtol=1e-9, atol=1e-10 * scale)
    return dict(rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_every_path_agrees_with_the_unconverted_module(case):
    layout, dtype, fmt, path, grad = case
    torch.manual_seed(0)
    ref = randomize_bn(LAYOUTS[layout](CHANNELS)).to(dtype).eval()
    run = _runner(ref, path)
    for call in range(2):  # the second call runs what the first compiled
        xs = _inputs(layout, dtype, fmt, grad == "grad")
        with _context(grad):
            want = ref([x.clone() if grad != "grad" else x for x in xs])
            xs_run = [x.detach().clone().requires_grad_(x.requires_grad) for x in xs]
            got = run([x for x in xs_run])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            torch.testing.assert_close(g, w, **_tolerance(dtype, float(w.detach().abs().max())))
        if grad == "grad" and path != "optimize":
            loss_of(want).backward()
            loss_of(got).backward()
            for a, b in zip(xs, xs_run):
                torch.testing.assert_close(b.grad, a.grad, **_tolerance(dtype, float(a.grad.abs().max())))
    if path in ("python", "native"):
        fx = hrnet_fast.fused_modules(run)[0].fused_exchange
        assert fx.program is not None
        assert (fx.one_call is not None) == (path == "native")
    if path == "terms":
        assert hrnet_fast.fused_modules(run)[0].fused_exchange.program is None
