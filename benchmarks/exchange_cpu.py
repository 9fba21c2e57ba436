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

import torch

import hrnet_fast
from hrnet_fast.bench.bandwidth import copy_bandwidth
from hrnet_fast.bench.memory import settle_allocator
from hrnet_fast.bench.shapes import exchange_case
from hrnet_fast.bench.timing import paired

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mode", default="nearest", choices=["nearest", "bilinear"])
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    settle_allocator()
    bw = copy_bandwidth("cpu", gib=0.25, reps=10)["gbps_read_plus_write"] * 1e9
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

        rows = ([s.detach() for s in sc], [b.detach() for b in sh])
        plain = [x.detach() for x in xs]
        hw = [int(v) for v in case.in_hws[0]]

        def op_only():
            # the registered op itself: no wrapper, no autograd
            return torch.ops.hrnet_fast.exchange.default(plain, *rows, hw, args.mode, False, True)

        with torch.no_grad():
            t_ref, t_fused, fwd_speedup, _ = paired(ref, fused, args.iters)
            _, t_op, op_speedup, _ = paired(ref, op_only, args.iters)
        y_ref, y_fused = ref(), fused()
        g = torch.randn_like(y_ref)
        params = xs + sc + sh

        def ref_bwd():
            return torch.autograd.grad(y_ref, params, g, retain_graph=True)

        def fused_bwd():
            return torch.autograd.grad(y_fused, params, g, retain_graph=True)

        tb_ref, tb_fused, bwd_speedup, _ = paired(ref_bwd, fused_bwd, args.iters)
        nbytes = case.forward_bytes(4)
        desc = " + ".join(f"{h}x{w}" for h, w in case.in_hws) + f" ({args.batch}x{c})"
        rate = nbytes / (t_fused * 1e-3)
        print(f"| {i} | {desc} | {nbytes / 1e6:.1f} MB | {t_ref:.2f} | {t_fused:.2f} | "
              f"{fwd_speedup:.1f}x | {rate / 1e9:.1f} ({rate / bw:.0%}) | "
              f"{t_op:.2f} ({op_speedup:.1f}x) | {tb_ref:.2f} | {tb_fused:.2f} | {bwd_speedup:.1f}x |")


if __name__ == "__main__":
    main()
