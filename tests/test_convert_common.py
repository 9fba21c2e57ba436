"""Shared helpers for the conversion tests: randomised BatchNorm state (the
default 0/1 statistics would hide folding mistakes), paired models, and
comparisons of outputs, gradients and buffers."""
from __future__ import annotations

import copy
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

import hrnet_fast


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(c, generator=g) - 0.5)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                    m.num_batches_tracked.fill_(3)
    return model


def pair(model: nn.Module, dtype=torch.float64, **convert_kw) -> Tuple[nn.Module, nn.Module]:
    """(unconverted, converted) copies with identical state."""
    ref = randomize_bn(model).to(dtype)
    fused = hrnet_fast.convert(copy.deepcopy(ref), **convert_kw)
    return ref, fused


def as_list(out) -> List[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def assert_close_lists(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], atol=1e-9, rtol=1e-7):
    a, b = as_list(a), as_list(b)
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape and x.dtype == y.dtype, k
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol, msg=lambda m: f"output {k}: {m}")


def loss_of(out) -> torch.Tensor:
    # A loss that weighs channels/pixels differently, so a wrong gradient
    # cannot cancel out.
    total = 0
    for t in as_list(out):
        w = torch.linspace(-1.0, 2.0, t.numel(), dtype=t.dtype).view_as(t)
        total = total + (t * w).sum() + 0.1 * t.square().sum()
    return total


def assert_same_grads(ref: nn.Module, fused: nn.Module, atol=1e-8, rtol=1e-6):
    fp = dict(fused.named_parameters())
    n = 0
    for name, p in ref.named_parameters():
        q = fp[name]
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(q.grad, p.grad, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
        n += 1
    assert n > 0


def assert_same_state(ref: nn.Module, fused: nn.Module, atol=1e-10, rtol=1e-7):
    sr, sf = ref.state_dict(), fused.state_dict()
    assert list(sr) == list(sf)
    for k in sr:
        torch.testing.assert_close(sf[k], sr[k], atol=atol, rtol=rtol, msg=lambda m: f"{k}: {m}")


def train_step_matches(ref: nn.Module, fused: nn.Module, x: torch.Tensor, atol=1e-8, rtol=1e-6):
    """One forward+backward in train mode: outputs, every parameter's
    gradient and the running buffers must agree."""
    ref.train()
    fused.train()
    a = ref(x.clone())
    b = fused(x.clone())
    assert_close_lists(a, b, atol=atol, rtol=rtol)
    loss_of(a).backward()
    loss_of(b).backward()
    assert_same_grads(ref, fused, atol=atol, rtol=rtol)
    assert_same_state(ref, fused, atol=atol, rtol=rtol)


def eval_matches(ref: nn.Module, fused: nn.Module, x: torch.Tensor, atol=1e-9, rtol=1e-7):
    ref.eval()
    fused.eval()
    with torch.no_grad():
        assert_close_lists(ref(x.clone()), fused(x.clone()), atol=atol, rtol=rtol)


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Fine-tuning with frozen BN: the model trains, its BatchNorms stay in
    eval (running statistics) with no gradients."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    return model


def gradients_match(ref: nn.Module, fused: nn.Module, x: torch.Tensor, rounds: int = 2) -> None:
    """Outputs and parameter gradients agree, `rounds` times over (a graph
    cached across calls would fail the second backward)."""
    for _ in range(rounds):
        for m in (ref, fused):
            m.zero_grad()
        a, b = ref(x), fused(x)
        assert_close_lists(a, b)
        loss_of(a).backward()
        loss_of(b).backward()
        assert_same_grads(ref, fused)


def record_outputs(modules: dict) -> dict:
    """Forward hooks on {name: module}: returns {name: the first output each
    module produced}, filled as the models run."""
    seen = {}

    def hook(mod, args, out, name):
        seen.setdefault(name, out.detach().clone())  # returns None: the output stays what it was

    for name, module in modules.items():
        module.register_forward_hook(lambda mod, args, out, name=name: hook(mod, args, out, name))
    return seen


def grad_modes_agree(ref: nn.Module, fused: nn.Module, x: torch.Tensor) -> None:
    """In eval, `fused` matches `ref` under inference_mode, then no_grad,
    then still runs a backward: anything it caches (BN folds, stacked
    weights) made in one mode must not leak into the next (an inference
    tensor cannot be saved for backward)."""
    ref.eval()
    fused.eval()
    with torch.no_grad():
        expect = ref(x)
    with torch.inference_mode():
        assert_close_lists(expect, fused(x))
    with torch.no_grad():
        assert_close_lists(expect, fused(x))
    xg = x.clone().requires_grad_()
    loss_of(fused(xg)).backward()
    assert xg.grad is not None
