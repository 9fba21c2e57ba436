"""Paired CPU benchmark of the exchange op: fused C++ kernel vs the eager
reference, at HRNet-W32 stage-4 shapes (256x192 input, batch 8, float32).

    .venv/bin/python benchmarks/exchange_cpu.py [--iters 30] [--mode nearest]

Each iteration times the reference and the fused op back to back on the same
tensors (order alternating), and the speedup is the median of the per-pair
ratios, so drift in machine load hits both sides alike. The roofline number
first: the bytes the fused forward must move (read every input once, write
the output once) over this machine's measured copy bandwidth. "op-only" is
the registered op called on prepared dense affine rows (what the wrapper's
checks and stacking cost is the difference), paired with the reference the
same way.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Tuple

import torch

import hrnet_fast
from bench_shapes import exchange_case
from hrnet_fast.bench.memory import settle_allocator

def measure_copy_bandwidth(nbytes: int = 256 << 20, reps: int = 10) -> float:
    """Bytes moved per second by a large tensor copy (read + write)."""
    src = torch.randn(nbytes // 4)
    dst = torch.empty_like(src)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    return 2 * nbytes / statistics.median(times)


def paired(fn_a: Callable[[], object], fn_b: Callable[[], object], iters: int) -> Tuple[float, float, float]:
    """Median time of a, of b, and median of the per-pair ratios a / b."""
    for _ in range(3):
        fn_a(), fn_b()
    ta, tb, ratios = [], [], []
    for it in range(iters):
        order = (fn_a, fn_b) if it % 2 == 0 else (fn_b, fn_a)
        times = {}
        for fn in order:
            t = time.perf_counter()
            fn()
            times[fn] = time.perf_counter() - t
        ta.append(times[fn_a])
        tb.append(times[fn_b])
        ratios.append(times[fn_a] / times[fn_b])
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mode", default="nearest", choices=["nearest", "bilinear"])
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    settle_allocator()
    bw = measure_copy_bandwidth()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"# CPU: {torch.get_num_threads()} threads, torch {torch.__version__}, measured copy bandwidth "
          f"{bw / 1e9:.1f} GB/s; mode={args.mode}, {'channels_last' if args.channels_last else 'NCHW'}")
    print("| branch | inputs | fwd bytes | ref fwd ms | fused fwd ms | fwd speedup | fused fwd GB/s (of copy) "
          "| op-only fwd ms (speedup) | ref bwd ms | fused bwd ms | bwd speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i in range(4):
        case = exchange_case("w32", "pose", 4, i, batch=args.batch)
        c = case.channels
        shapes = [(args.batch, c, h, w) for h, w in case.in_hws]
        xs = [torch.randn(s).contiguous(memory_format=fmt).requires_grad_() for s in shapes]
        sc = [(torch.rand(c) + 0.5).requires_grad_() for _ in shapes]
        sh = [torch.randn(c).requires_grad_() for _ in shapes]
        kw = dict(mode=args.mode)

        def ref():
            return hrnet_fast.exchange(xs, sc, sh, backend="reference", **kw)

        def fused():
            return hrnet_fast.exchange(xs, sc, sh, backend="cpu", **kw)

        dense = (torch.stack(sc).detach(), torch.stack(sh).detach())
        plain = [x.detach() for x in xs]
        hw = [int(v) for v in case.in_hws[0]]

        def op_only():
            # the registered op on prepared dense rows: no wrapper, no autograd
            return torch.ops.hrnet_fast.exchange.default(plain, *dense, hw, args.mode, False, True)

        with torch.no_grad():
            t_ref, t_fused, fwd_speedup = paired(ref, fused, args.iters)
            _, t_op, op_speedup = paired(ref, op_only, args.iters)
        y_ref, y_fused = ref(), fused()
        g = torch.randn_like(y_ref)
        params = xs + sc + sh

        def ref_bwd():
            return torch.autograd.grad(y_ref, params, g, retain_graph=True)

        def fused_bwd():
            return torch.autograd.grad(y_fused, params, g, retain_graph=True)

        tb_ref, tb_fused, bwd_speedup = paired(ref_bwd, fused_bwd, args.iters)
        nbytes = case.forward_bytes(4)
        desc = " + ".join(f"{h}x{w}" for h, w in case.in_hws) + f" ({args.batch}x{c})"
        print(f"| {i} | {desc} | {nbytes / 1e6:.1f} MB | {t_ref * 1e3:.2f} | {t_fused * 1e3:.2f} | "
              f"{fwd_speedup:.1f}x | {nbytes / t_fused / 1e9:.1f} ({nbytes / t_fused / bw:.0%}) | "
              f"{t_op * 1e3:.2f} ({op_speedup:.1f}x) | {tb_ref * 1e3:.2f} | {tb_fused * 1e3:.2f} | {bwd_speedup:.1f}x |")


if __name__ == "__main__":
    main()
