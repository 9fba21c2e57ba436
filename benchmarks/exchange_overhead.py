"""Python work per call of a converted module's exchange: the time a
FusedExchange forward takes beyond the library calls it makes.

In eval under no_grad a converted module's exchange runs as its eval
program in one C++ call (hrnet_fast.plan.native): its Python work is the
forward's time minus that call's, timed alone. For comparison the same
module with `one_call_eval = False` runs its program from Python; its
library calls (convolutions, GEMMs, views, the exchange op) are recorded at
the dispatcher (a TorchDispatchMode) and replayed directly, and that path's
Python work is its forward's time minus the replay's. Each figure is the
median of per-round differences of paired calls.

    python benchmarks/exchange_overhead.py [--model w32] [--size 256x192] [--iters 200]

Default: HRNet-W32 pose (this package's), stage 4's first module, batch 1,
256x192 input, float32, eval, on the CPU, one thread.
"""
from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hrnet_fast
from hrnet_fast.bench import timing
from hrnet_fast.bench.models import randomize_batchnorm
from hrnet_fast.plan import native


class Recorder(TorchDispatchMode):
    """The ops a call dispatches, with their arguments, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def stage4_exchange(model: torch.nn.Module, x: torch.Tensor):
    """The first 4-branch module's FusedExchange and the inputs it gets."""
    host = [m for m in hrnet_fast.fused_modules(model) if m.num_branches == 4][0]
    seen = {}
    handle = host.fused_exchange.register_forward_pre_hook(lambda mod, inp: seen.setdefault("xs", list(inp[0])))
    with torch.no_grad():
        model(x)
    handle.remove()
    return host.fused_exchange, seen["xs"]


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
    model.eval()
    in_python = copy.deepcopy(model)
    hrnet_fast.convert(model)
    hrnet_fast.convert(in_python)
    for m in hrnet_fast.fused_modules(in_python):
        m.fused_exchange.one_call_eval = False
    x = torch.randn(1, 3, h, w)
    fx, xs = stage4_exchange(model, x)
    fx_py, xs_py = stage4_exchange(in_python, x)

    with torch.no_grad():
        for _ in range(2):
            fx(xs)
            fx_py(xs_py)
        one_call = fx.one_call
        if one_call is None:
            raise SystemExit(f"{args.model}: the stage-4 exchange does not run as one call here "
                             f"(backends: {hrnet_fast.backends()})")
        rec = Recorder()
        with rec:
            fx_py(xs_py)

        def replay():
            for func, a, k in rec.calls:
                func(*a, **k)

        # The module keeps its inputs as they are: every call gets the same list.
        one = {"forward": lambda: fx(xs), "call alone": lambda: native.run(one_call, xs)}
        rows = {"forward, program in Python": lambda: fx_py(xs_py), "replay": replay}
        both = {"one call": one["forward"], "program in Python": rows["forward, program in Python"]}
        for _ in range(20):
            for step in (*one.values(), *rows.values()):
                step()
        # Two calls per paired run, whose order alternates by round: a call
        # that follows another of the same model finds its weights in cache,
        # so only calls compared with each other share a run.
        ms = {}
        for steps in (one, rows, both):
            ms.update(timing.paired_rounds(steps, args.iters, "cpu"))
    med = {k: statistics.median(v) * 1e3 for k, v in ms.items()}
    terms = sum(len(r) for r in fx.terms)
    print(f"{args.model} stage-4 module ({len(fx.terms)} rows, {terms} terms), batch 1, {h}x{w} input, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; medians of {args.iters} paired rounds")
    work = timing.median_difference(ms, "forward", "call alone")
    print(f"  one C++ call: forward {med['forward']:.1f} us, the call alone {med['call alone']:.1f} us: "
          f"Python work {work[0]:.1f} us per call (95 % CI {work[1]:.1f}-{work[2]:.1f})")
    work = timing.median_difference(ms, "forward, program in Python", "replay")
    print(f"  program in Python: forward {med['forward, program in Python']:.1f} us, its {len(rec.calls)} library calls "
          f"replayed {med['replay']:.1f} us: Python work {work[0]:.1f} us per call "
          f"(95 % CI {work[1]:.1f}-{work[2]:.1f})")
    gain = timing.median_difference(ms, "program in Python", "one call")
    print(f"  forward as one C++ call {med['one call']:.1f} us, program in Python {med['program in Python']:.1f} us: "
          f"{gain[0]:.1f} us less per call (95 % CI {gain[1]:.1f}-{gain[2]:.1f})")
    ops = sorted({str(f) for f, _, _ in rec.calls})
    print(f"  the program's library calls: {', '.join(ops)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
