"""Where the GPU time of the exchange goes: torch.profiler tables of the
CUDA backend's forward and backward at W48 seg stage-4 shapes (bf16,
channels_last), and of one converted stage-4 row with conv terms.

Each table lists kernels by total device time next to the host time of the
same calls, so a case whose wall time is far above its kernels' time is
host-bound (launches, Python), and one whose kernels are slow names them.

    python benchmarks/profile_gpu.py --out profile.txt
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hrnet_fast  # noqa: E402
from hrnet_fast.bench.runner import device_name  # noqa: E402
from hrnet_fast.bench.timing import synchronize, time_call  # noqa: E402
from hrnet_fast.bench.shapes import exchange_case  # noqa: E402
from onepass_gpu import fused_row, stage4_module  # noqa: E402
from test_exchange_bench import make_tensors  # noqa: E402


def profiled(name: str, fn: Callable[[], object], reps: int, out: str, device: str) -> None:
    """Profile `reps` calls of `fn` and append the table to `out` at once, so
    a run cut short keeps the sections it finished."""
    for _ in range(3):  # warm-up: tuning, allocator, lazy init
        fn()
    synchronize(device)
    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        ms = sum(time_call(fn, device)[0] for _ in range(reps)) / reps
    table = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=12,
                                      max_name_column_width=70)
    head = f"## {name}: {ms * 1e3:.1f} us per call (under the profiler), {reps} calls"
    with open(out, "a") as f:
        f.write("\n".join([head, table, ""]) + "\n")
    print(head, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="profile.txt")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--device", default="cuda", help="cpu: a quick check of this script (small shapes)")
    args = p.parse_args(argv)
    dev = args.device
    native = "cuda" if dev == "cuda" else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    batch = 0 if dev == "cuda" else 1
    with open(args.out, "w") as f:
        f.write(f"device {device_name(dev)}, torch {torch.__version__}\n\n")
    for branch in (0, 3):
        case = exchange_case("w48", "seg", 4, branch, batch=batch)
        xs, ss, bs = make_tensors(case, dev, dtype, True, grad=True)
        y = hrnet_fast.exchange(xs, ss, bs, size=case.out_hw, mode=case.mode, backend=native)
        g = torch.randn_like(y)
        wrt = xs + [t for t in ss + bs if t is not None]
        with torch.no_grad():
            profiled(f"{case.id} {native} forward", lambda: hrnet_fast.exchange(
                xs, ss, bs, size=case.out_hw, mode=case.mode, backend=native), args.reps, args.out, dev)
        profiled(f"{case.id} {native} backward", lambda: torch.autograd.grad(y, wrt, g, retain_graph=True),
                 args.reps, args.out, dev)
    host = stage4_module("w48", "bilinear").to(dev, dtype)
    xs = [torch.randn(batch or 8, c, 128 >> k, 256 >> k, device=dev, dtype=dtype)
          .contiguous(memory_format=torch.channels_last) for k, c in enumerate((48, 96, 192, 384))]
    with torch.no_grad():
        for backend in (native, "triton") if dev == "cuda" else (native,):
            row = fused_row(host, 2, backend)
            profiled(f"w48 stage-4 row 2 converted, backend {backend}", lambda: row(xs), args.reps, args.out, dev)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
