"""Paired CPU benchmark of a whole HRNet: timm hrnet_w32 converted with
hrnet_fast.convert vs unconverted.

    .venv/bin/python benchmarks/model_cpu.py [--iters 20] [--train-iters 8] [--model hrnet_w32]
        [--eval-batch 1] [--skip-eval] [--skip-train]

- eval: 1x3x256x192, no_grad, float32;
- train step: batch 4, forward + backward (BN in training mode);
- the share of forward time spent in the exchange step, before and after:
  time in each HRNet module minus time in its branches (forward hooks),
  over the whole forward's time.

Both models hold the same weights (randomised BN statistics, so the folded
path does real work). Every iteration runs both back to back, order
alternating; figures are medians of the per-pair ratios, so drift in the
machine's load hits both sides alike.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from typing import Callable, Dict

import torch
import torch.nn as nn

import hrnet_fast
from hrnet_fast.bench.memory import settle_allocator
from hrnet_fast.bench.models import randomize_batchnorm
from hrnet_fast.bench.timing import paired


class ExchangeTimer:
    """Forward time inside HRNet modules minus time inside their branches:
    the exchange step (fuse layers, upsampling, sums, ReLU)."""

    def __init__(self, model: nn.Module):
        self.hosts = [m for m in model.modules()
                      if isinstance(getattr(m, "fuse_layers", None), nn.ModuleList)
                      and getattr(m, "num_branches", 1) > 1]
        self.total = 0.0
        self.handles = []
        for host in self.hosts:
            self._watch(host, +1)
            for branch in host.branches:
                self._watch(branch, -1)

    def _watch(self, module: nn.Module, sign: int) -> None:
        start: Dict[str, float] = {}

        def pre(*_):
            start["t"] = time.perf_counter()

        def post(*_):
            self.total += sign * (time.perf_counter() - start["t"])

        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def exchange_share(model: nn.Module, x: torch.Tensor, iters: int) -> float:
    timer = ExchangeTimer(model)
    shares = []
    with torch.no_grad():
        model(x)
        for _ in range(iters):
            timer.total = 0.0
            t = time.perf_counter()
            model(x)
            shares.append(timer.total / (time.perf_counter() - t))
    timer.remove()
    return statistics.median(shares)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hrnet_w32")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--train-iters", type=int, default=8)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--eval-batch", type=int, default=1)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()

    import timm

    torch.manual_seed(0)
    settle_allocator()
    base = timm.create_model(args.model, pretrained=False)
    randomize_batchnorm(base)
    fused = hrnet_fast.convert(copy.deepcopy(base), backend=args.backend)
    print(f"# {args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, backend={args.backend}")

    if not args.skip_eval:
        run_eval(base, fused, args)
    if not args.skip_train:
        run_train(base, fused, args)


def run_eval(base: nn.Module, fused: nn.Module, args: argparse.Namespace) -> None:
    base.eval()
    fused.eval()
    x = torch.randn(args.eval_batch, 3, 256, 192)
    with torch.no_grad():
        want = base(x)
        # untrained weights with random BN statistics give large logits:
        # report the error relative to the output's magnitude
        err = ((fused(x) - want).abs().max() / want.abs().max()).item()
        t_ref, t_fused, ratio, (lo, hi) = paired(lambda: base(x), lambda: fused(x), args.iters)
    print(f"eval {args.eval_batch}x3x256x192: unconverted {t_ref:.1f} ms, converted {t_fused:.1f} ms, "
          f"speedup x{ratio:.3f} (95% CI x{lo:.3f}-x{hi:.3f}; median of {args.iters} paired ratios; "
          f"max |diff| / max |out| {err:.1e})")

    share_ref = exchange_share(base, x, max(5, args.iters // 2))
    share_fused = exchange_share(fused, x, max(5, args.iters // 2))
    print(f"exchange share of eval forward time: unconverted {share_ref:.1%}, converted {share_fused:.1%}")



def run_train(base: nn.Module, fused: nn.Module, args: argparse.Namespace) -> None:
    base.train()
    fused.train()
    xt = torch.randn(4, 3, 256, 192)

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            model(xt).sum().backward()
        return run

    t_ref, t_fused, ratio, (lo, hi) = paired(step(base), step(fused), args.train_iters, warmup=1)
    print(f"train step 4x3x256x192 (fwd+bwd): unconverted {t_ref:.0f} ms, converted "
          f"{t_fused:.0f} ms, speedup x{ratio:.3f} (95% CI x{lo:.3f}-x{hi:.3f}; median of "
          f"{args.train_iters} paired ratios)")


if __name__ == "__main__":
    main()
