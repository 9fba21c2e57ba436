"""The one-pass exchange (stride-2 conv terms computed inside the exchange
kernel) on the output branches that have downsample chains, against eager
and torch.compile of the same rows.

Default case (issue 7's): HRNet-W48 seg stage 4 at 512x1024 input, batch 8,
bfloat16, channels_last, eval. Output branch i of the exchange is

    relu(sum_j fuse_layers[i][j](x_j))    (x_i itself for j == i; coarser
                                           terms upsampled bilinearly)

and is timed as
  - eager:    the module's own layers (cuDNN conv, BN, upsample, add, ReLU);
  - compile:  torch.compile(eager row, mode=--compile-mode);
  - fused-B:  the converted module's row on backend B (BN folded, the
              chain's last conv inside the exchange where B has the kernel);
  - kernel-B: the exchange call alone, on the arguments the fused row passes
              it, with its FLOPs and bytes against the measured ceilings (its
              rates from a CUDA-graph replay: the kernels' time alone).

cuDNN's benchmark mode is on (as HRNet's configs set it) unless
--no-cudnn-benchmark. Timing: rounds that time every variant once (triton.testing.do_bench
median, L2 flushed) in rotating order; a variant's figure is its median
over rounds, a speed-up the median of the per-round ratios.

    python benchmarks/onepass_gpu.py --json onepass.json
    python benchmarks/onepass_gpu.py --device cpu --size 64x128 --batch 1 --dtype float32 --compile-mode none
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import hrnet_fast
import hrnet_fast.modules as fused_modules
from hrnet_fast.bench.bandwidth import copy_bandwidth
from hrnet_fast.bench.config import parse_size
from hrnet_fast.bench.models import randomize_batchnorm
from hrnet_fast.bench.runner import device_name
from hrnet_fast.bench.timing import cuda_graph_ms, rotation, time_call
from hrnet_fast.models.configs import ARCHS
from hrnet_fast.models.hrmodule import HighResolutionModule


def stage4_module(arch: str, mode: str) -> HighResolutionModule:
    """Stage 4's exchange host with one block per branch (the blocks are not
    timed: only the fuse layers are)."""
    channels = tuple(ARCHS[arch]["stage4"].channels)
    m = HighResolutionModule(list(channels), (1,) * len(channels), channels, "BASIC", True, mode)
    randomize_batchnorm(m)
    return m.eval()


def eager_row(host: HighResolutionModule, i: int) -> Callable[[List[torch.Tensor]], torch.Tensor]:
    """Output branch i exactly as the unconverted module computes it."""
    row = host.fuse_layers[i]

    def run(xs: List[torch.Tensor]) -> torch.Tensor:
        y = xs[i]
        for j, layer in enumerate(row):
            if j == i:
                continue
            t = layer(xs[j])
            if j > i and host.mode == "bilinear":
                t = F.interpolate(t, size=xs[i].shape[-2:], mode="bilinear", align_corners=host.align_corners)
            y = y + t
        return F.relu(y)

    return run


def fused_row(host: HighResolutionModule, i: int, backend: str) -> Callable[[List[torch.Tensor]], torch.Tensor]:
    """Output branch i of a converted copy of `host` on `backend`."""
    conv = hrnet_fast.convert(copy.deepcopy(host), backend=backend)
    fx = conv.fused_exchange
    return lambda xs: fx._row(i, conv.fuse_layers[i], xs, {})


def captured_call(row: Callable, xs: List[torch.Tensor]) -> Dict[str, Any]:
    """The arguments the fused row hands to hrnet_fast.exchange."""
    seen: Dict[str, Any] = {}
    real = fused_modules.exchange

    def spy(inputs, scales=None, shifts=None, **kw):
        seen.update(inputs=inputs, scales=scales, shifts=shifts, **kw)
        return real(inputs, scales, shifts, **kw)

    fused_modules.exchange = spy
    try:
        row(xs)
    finally:
        fused_modules.exchange = real
    return seen


def kernel_work(call: Dict[str, Any]) -> Dict[str, float]:
    """FLOPs of the conv terms and the fewest bytes the call must move: every
    tensor argument read once, the output written once."""
    tensors = list(call["inputs"]) + [t for t in (call["scales"] or []) + (call["shifts"] or []) if t is not None]
    flops = 0.0
    out_numel = call["inputs"][0].shape[0] * call["inputs"][0].shape[1] * call["size"][0] * call["size"][1]
    for a, w, b in call.get("convs") or []:
        tensors += [a, w] + ([b] if b is not None else [])
        flops += 2.0 * out_numel * w.shape[1] * w.shape[2] * w.shape[3]
    elem = call["inputs"][0].element_size()
    return {"flops": flops, "bytes": float(sum(t.numel() * t.element_size() for t in tensors) + out_numel * elem)}


def ceilings(device: str, dtype: torch.dtype) -> Dict[str, float]:
    """Measured copy bandwidth (read + write, benchmarks/bandwidth.py) and
    dense matmul rate."""
    if device != "cuda":
        return {}
    from triton.testing import do_bench

    copy_gbps = copy_bandwidth(device, gib=1.0)["gbps_read_plus_write"]
    n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm_ms = float(do_bench(lambda: a @ b, warmup=10, rep=100, return_mode="median"))
    return {"copy_gbps": copy_gbps, "matmul_tflops": 2 * n**3 / (mm_ms * 1e-3) / 1e12}


def measure(fn: Callable[[], Any], device: str) -> float:
    if device == "cuda":
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))
    return statistics.median(time_call(fn, device)[0] for _ in range(3))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def bench_branch(host, i: int, xs, ref, args, caps: Dict[str, float], deadline: float, log) -> Dict[str, Any]:
    dev = args.device
    variants: Dict[str, Callable[[], Any]] = {"eager": (lambda f=eager_row(host, i): f(xs))}
    result: Dict[str, Any] = {"branch": i, "out_hw": list(xs[i].shape[-2:]), "channels": xs[i].shape[1],
                              "errors": {}, "rel_err_vs_fp32": {}, "compile_s": None}
    for backend in args.backends:
        if backend != "auto" and not hrnet_fast.backends().get(backend):
            result["errors"][backend] = "unavailable"
            continue
        row = fused_row(host, i, backend)
        call = captured_call(row, xs)
        kw = {k: v for k, v in call.items() if k not in ("inputs", "scales", "shifts")}
        variants[f"fused-{backend}"] = (lambda r=row: r(xs))
        variants[f"kernel-{backend}"] = (lambda c=call, k=kw: hrnet_fast.exchange(c["inputs"], c["scales"],
                                                                                   c["shifts"], **k))
        result.setdefault("kernel_work", {})[backend] = dict(kernel_work(call), conv_terms=len(call.get("convs") or []),
                                                              resolved=hrnet_fast.ops.resolve_backend(
                                                                  backend, xs[0].device))
    if args.compile_mode != "none":
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(eager_row(host, i), mode=args.compile_mode)
            compiled(xs)
            compiled(xs)
            variants["compile"] = (lambda f=compiled: f(xs))
        except Exception as exc:  # a failed compile is a result to report, not a crash
            result["errors"]["compile"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        result["compile_s"] = time.perf_counter() - t0
        log(f"  branch {i}: compile ({args.compile_mode}) took {result['compile_s']:.1f}s")
    with torch.no_grad():
        for name, fn in variants.items():
            if not name.startswith("kernel"):
                result["rel_err_vs_fp32"][name] = rel_err(fn(), ref)
    times: Dict[str, List[float]] = {n: [] for n in variants}
    for r in range(args.rounds):
        with torch.no_grad():
            for name in rotation(list(variants), r):
                times[name].append(measure(variants[name], dev))
        if time.perf_counter() > deadline and r >= 2:
            break
    result["rounds"] = len(times["eager"])
    result["median_ms"] = {n: statistics.median(t) for n, t in times.items()}
    result["speedup_vs_eager"] = {n: statistics.median(e / v for e, v in zip(times["eager"], t))
                                  for n, t in times.items() if n != "eager" and not n.startswith("kernel-")}
    if "compile" in times:
        result["speedup_vs_compile"] = {n: statistics.median(c / v for c, v in zip(times["compile"], t))
                                        for n, t in times.items() if n.startswith("fused")}
    for backend, work in result.get("kernel_work", {}).items():
        ms = result["median_ms"][f"kernel-{backend}"]
        if dev == "cuda":  # the kernels' own time, without the call's host cost
            graph = cuda_graph_ms(variants[f"kernel-{backend}"])
            work["graph_ms"] = graph
            ms = graph or ms
        work["gbps"] = work["bytes"] / (ms * 1e-3) / 1e9
        work["tflops"] = work["flops"] / (ms * 1e-3) / 1e12
        if caps:
            work["bandwidth_floor_ms"] = work["bytes"] / (caps["copy_gbps"] * 1e9) * 1e3
            work["flop_floor_ms"] = work["flops"] / (caps["matmul_tflops"] * 1e12) * 1e3
            work["fraction_of_bound"] = max(work["bandwidth_floor_ms"], work["flop_floor_ms"]) / ms
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--arch", default="w48")
    p.add_argument("--size", default="512x1024", help="network input HxW")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    p.add_argument("--branches", default="2,3")
    p.add_argument("--backends", default="auto,triton,cuda")
    p.add_argument("--compile-mode", default="max-autotune", help='"none" to skip torch.compile')
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="leave torch.backends.cudnn.benchmark off (HRNet's training configs turn it on)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--time-budget", type=float, default=0, help="seconds; stop timing rounds past it")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    dtype = getattr(torch, args.dtype)
    h, w = parse_size(args.size)
    deadline = time.perf_counter() + (args.time_budget or 1e9)
    # The official HRNet configs set CUDNN.BENCHMARK: every variant's convs
    # then run cuDNN's fastest algorithm for their shape, as in training.
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark

    def log(msg: str) -> None:
        print(msg, flush=True)

    torch.manual_seed(0)
    host32 = stage4_module(args.arch, "bilinear").to(args.device)
    host = copy.deepcopy(host32).to(dtype)
    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    xs32 = [torch.randn(args.batch, c, h // (4 << k), w // (4 << k), device=args.device).contiguous(memory_format=fmt)
            for k, c in enumerate(ARCHS[args.arch]["stage4"].channels)]
    xs = [x.to(dtype) for x in xs32]
    caps = ceilings(args.device, dtype)
    report: Dict[str, Any] = {"device": device_name(args.device), "torch": torch.__version__,
                              "args": vars(args), "ceilings": caps, "branches": []}
    if caps:
        log(f"ceilings: copy {caps['copy_gbps']:.0f} GB/s, {args.dtype} matmul {caps['matmul_tflops']:.0f} TFLOP/s")
    for i in (int(b) for b in args.branches.split(",")):
        with torch.no_grad():
            ref = eager_row(host32, i)([x.to(torch.float32) for x in xs])
        res = bench_branch(host, i, xs, ref, args, caps, deadline, log)
        report["branches"].append(res)
        if args.json:  # after every branch, so a cut-off run keeps what it measured
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        log(f"branch {i} ({res['channels']} ch, {res['out_hw'][0]}x{res['out_hw'][1]}), {res['rounds']} rounds:")
        for name, ms in res["median_ms"].items():
            extra = ""
            if name in res["speedup_vs_eager"]:
                extra += f"  x{res['speedup_vs_eager'][name]:.2f} vs eager"
            if name in res.get("speedup_vs_compile", {}):
                extra += f"  x{res['speedup_vs_compile'][name]:.2f} vs compile"
            if name.startswith("kernel-"):
                wk = res["kernel_work"][name[len("kernel-"):]]
                if wk.get("graph_ms"):
                    extra += f"  (graph replay {wk['graph_ms'] * 1e3:.1f} us)"
                extra += f"  {wk['bytes'] / 1e6:.1f} MB {wk['gbps']:.0f} GB/s, {wk['flops'] / 1e9:.2f} GFLOP " \
                         f"{wk['tflops']:.1f} TFLOP/s, {wk['conv_terms']} conv terms on {wk['resolved']}"
                if "fraction_of_bound" in wk:
                    extra += f", {100 * wk['fraction_of_bound']:.0f}% of bound"
            err = res["rel_err_vs_fp32"].get(name)
            log(f"  {name:16s} {ms * 1e3:9.1f} us{extra}" + (f"  rel.err {err:.1e}" if err is not None else ""))
        for name, msg in res["errors"].items():
            log(f"  {name}: {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
