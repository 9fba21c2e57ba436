"""Python work per call of a converted module's exchange: the time a
FusedExchange forward takes beyond the library calls it makes.

The library calls (convolutions, the exchange op, ReLU) of one forward are
recorded at the dispatcher (a TorchDispatchMode) and replayed directly; the
forward's time minus the replay's, per paired round, is the Python layer's
own cost: resolving terms, checking the fold cache, building and checking
the op's arguments.

    python benchmarks/exchange_overhead.py [--model w32] [--iters 200]

Default: HRNet-W32 pose (this package's), stage 4's first module, batch 1,
256x192 input, float32, eval, on the CPU, one thread.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hrnet_fast
from hrnet_fast.bench import timing
from hrnet_fast.bench.models import randomize_batchnorm


class Recorder(TorchDispatchMode):
    """The ops a call dispatches, with their arguments, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="w32")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--size", default="256x192")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (1: the Python work does not depend on them, and one thread is "
                        "least disturbed by other processes)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    model = hrnet_fast.models.create(args.model, "pose")
    randomize_batchnorm(model)
    hrnet_fast.convert(model.eval())
    host = [m for m in hrnet_fast.fused_modules(model) if m.num_branches == 4][0]
    seen = {}
    handle = host.fused_exchange.register_forward_pre_hook(lambda mod, inp: seen.setdefault("xs", list(inp[0])))
    with torch.no_grad():
        model(torch.randn(1, 3, h, w))
    handle.remove()
    xs = seen["xs"]
    fx = host.fused_exchange

    def forward():
        return fx(list(xs))

    with torch.no_grad():
        forward()
        rec = Recorder()
        with rec:
            forward()

        def replay():
            for func, a, k in rec.calls:
                func(*a, **k)

        for _ in range(20):
            forward()
            replay()
        ms = timing.paired_rounds({"forward": forward, "replay": replay}, args.iters, "cpu")
    # The median of the per-round differences (calls moments apart), with
    # its distribution-free 95 % interval: steadier than a difference of
    # two medians of times twenty to fifty times larger.
    diffs_us = [(a - b) * 1e3 for a, b in zip(ms["forward"], ms["replay"])]
    work, (low, high) = statistics.median(diffs_us), timing.median_interval(diffs_us)
    terms = sum(len(r) for r in fx.plan)
    print(f"{args.model} stage-4 module ({len(fx.plan)} rows, {terms} terms), batch 1, {h}x{w} input, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"  forward {statistics.median(ms['forward']) * 1e3:.1f} us, its {len(rec.calls)} library calls replayed "
          f"{statistics.median(ms['replay']) * 1e3:.1f} us: Python work {work:.1f} us per call "
          f"(95 % CI {low:.1f}-{high:.1f}; median of {args.iters} paired differences)")
    ops = statistics.multimode([str(f) for f, _, _ in rec.calls])
    print(f"  library calls: {', '.join(sorted({str(f) for f, _, _ in rec.calls}))} (most: {ops[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
