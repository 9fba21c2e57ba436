"""`hrnet_fast.optimize(model)`: the whole-model inference path."""
from __future__ import annotations

import time
import warnings
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .copying import private_copy
from .graph import Builder
from ..plan.guard import ModelGuard, generation
from .module import OptimizedModule
from .report import Report
from .settings import Settings, resolve


def _move_rest(body: nn.Module, s: Settings) -> None:
    """Cast what still runs as the source's own layers (unfolded BNs, heads,
    unrecognised parts) to the compute dtype, rebinding the copy's aliases
    only: the source's tensors stay as they are."""
    for m in body.modules():
        for k, p in list(m._parameters.items()):
            if p is not None and p.is_floating_point() and (p.dtype != s.dtype or p.device != s.device):
                m._parameters[k] = nn.Parameter(p.detach().to(device=s.device, dtype=s.dtype), requires_grad=False)
        for k, b in list(m._buffers.items()):
            if b is None:
                continue
            if b.is_floating_point() and (b.dtype != s.dtype or b.device != s.device):
                m._buffers[k] = b.to(device=s.device, dtype=s.dtype)
            elif b.device != s.device:
                m._buffers[k] = b.to(device=s.device)


def optimize(model: nn.Module, example_input: Optional[Tensor] = None, *, dtype: Optional[torch.dtype] = None,
             channels_last: Optional[bool] = None, cuda_graph: Optional[bool] = None,
             backend: str = "auto") -> OptimizedModule:
    """An inference-only module computing what `model.eval()` computes, with
    every BatchNorm that has running statistics folded into the convolution
    before it, the convolutions' ReLU and residual-add epilogues fused
    (oneDNN post-ops with prepacked weights on the CPU, cuDNN's fused
    conv-bias-add-ReLU on CUDA), every HRNet module's exchange as fused
    `hrnet_fast.exchange` calls and, on CUDA, the whole forward replayed from
    a CUDA graph per input shape. `model` itself is not changed (its
    parameters are shared read-only where they are not folded).

    Args:
        model: an HRNet (timm, the official repositories, mmseg / mmpose
            backbones, hrnet_fast.models) or any model; parts that are not
            recognised run as they are (see `optimized.report`).
        example_input: an input like the ones to come. It fixes the expected
            rank and dtype, and one warm-up call on it (on CUDA: the capture
            of its shape's graph) happens now instead of at the first call.
            Without it the model's dtype and a 4-D input are expected.
        dtype: the compute dtype. Default: bfloat16 on CUDA for a float32
            model, the model's dtype on the CPU. Inputs and outputs keep the
            expected input dtype either way.
        channels_last: compute in channels_last. Default: on CUDA, and on the
            CPU where oneDNN runs the convolutions.
        cuda_graph: capture the forward as CUDA graphs (default: on CUDA).
        backend: the exchange backend, as for `hrnet_fast.exchange`.

    Returns:
        An `OptimizedModule`; its `report` counts what was folded and fused.

    Rules (each a clear error, but the first):
        - it computes what `model.eval()` computes: a model in training mode
          is evaluated all the same, with a warning and
          `report.source_training` saying so;
        - the example input's channel count must be what the model's first
          convolution takes (ValueError naming both, before anything is
          built);
        - inference only: `.train()`, a call with an input that requires
          grad under grad mode, `.to()` raise (use `hrnet_fast.convert` to
          train);
        - inputs must have the expected rank, dtype and device;
        - the source model must not change afterwards: a parameter or
          buffer changed in place, a training-mode forward, a move or cast,
          or a replaced tensor raises `StaleSourceError` at the next call
          (hrnet_fast.plan.guard.ModelGuard). Edits through `.data` bypass PyTorch's
          version counters and are not seen. Optimize again after any
          change.
        - on CUDA, further input shapes beyond the graph cache's bound
          (`optimized.graphs.max_entries`, 8) run without graphs, with one
          warning; results are always fresh tensors a later call does not
          overwrite.

    Example:
        >>> import torch, hrnet_fast
        >>> model = hrnet_fast.models.create("w18_small_v1", "pose").eval()
        >>> fast = hrnet_fast.optimize(model)
        >>> x = torch.randn(1, 3, 64, 64)
        >>> with torch.no_grad():
        ...     torch.allclose(fast(x), model(x), rtol=1e-3, atol=1e-4)
        True
        >>> fast.report.bns_left
        0
    """
    start = time.perf_counter()
    settings = resolve(model, example_input, dtype, channels_last, cuda_graph, backend)
    guard = ModelGuard(model)
    report = Report(platform=settings.platform.value, device=str(settings.device), dtype=str(settings.dtype),
                    channels_last=settings.channels_last, cuda_graph=settings.cuda_graph)
    training = [name or "the model" for name, m in model.named_modules() if m.training]
    if training:
        # The copy is evaluated (copying.private_copy puts it in eval mode):
        # said here and in the report, as a model in training mode is
        # usually one the caller forgot to put in eval mode.
        report.source_training = True
        warnings.warn(f"hrnet_fast.optimize: the model is in training mode ({training[0]}"
                      + (f" and {len(training) - 1} more modules" if len(training) > 1 else "")
                      + "); the optimized module computes what model.eval() computes (running BatchNorm "
                        "statistics, no dropout). Call model.eval() first to say so; to train, use "
                        "hrnet_fast.convert(model)", UserWarning, stacklevel=2)
    body = Builder(settings, report).build(private_copy(model))
    _move_rest(body, settings)
    optimized = OptimizedModule(body, settings, guard, report)
    if settings.cuda_graph and report.hooked:
        # Hooks would run only while capturing: the forward runs eagerly so
        # they run on every call.
        optimized.graphs = None
        report.cuda_graph = False
    # Building registered modules (global registration hooks fired); the
    # source itself is unchanged.
    guard.generation = generation()
    if example_input is not None:
        optimized(example_input)
    report.setup_s = time.perf_counter() - start
    return optimized
