"""The exchange on a GPU, measured the way issues 14 and 16 ask: per
backend, side by side in one process, the kernels' device time and launches
per call (torch.profiler), a CUDA-graph replay, the host time per call (200
back-to-back calls without synchronisation), and the bytes / FLOPs against
the measured copy bandwidth / matmul peak.

    python benchmarks/exchange_gpu.py --json exchange_gpu.json            # ops + rows
    python benchmarks/exchange_gpu.py --sections rows --compile-mode max-autotune
    python benchmarks/exchange_gpu.py --device cpu --batch 1 --shrink 8 # a quick check of the script

Sections:
  ops   the exchange op alone (issue 14): HRNet-W48 seg stage 4 at 512x1024,
        batch 8, output branches 0 and 3, nearest and bilinear, forward and
        backward; variants eager (the definition's PyTorch ops, which is what
        an unconverted HRNet runs), compile (torch.compile of the definition,
        default mode), and the cuda and triton backends.
  rows  stage 4's rows with stride-2 conv terms (issue 16): rows 2 and 3 in
        eval. "tail" is the call that differs between the paths: the last
        conv of every downsample chain plus the exchange, as one one-pass
        Triton call or as cuDNN convs plus the fused exchange (backend
        cuda). "row" is the whole row: the 1x1 convs and earlier chain links
        (the same in every path), then the tail; eager runs the module's own
        layers, compile is torch.compile of that (--compile-mode).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import hrnet_fast
from hrnet_fast.bench import device_time, timing
from hrnet_fast.bench.bandwidth import copy_bandwidth, matmul_tflops
from hrnet_fast.bench.models import randomize_batchnorm
from hrnet_fast.bench.runner import device_name
from hrnet_fast.bench.shapes import ExchangeCase, exchange_case
from hrnet_fast.convert.folding import fold
from hrnet_fast.models.configs import ARCHS
from hrnet_fast.models.hrmodule import HighResolutionModule


def _measure(fn: Callable[[], Any], device: str) -> Dict[str, Optional[float]]:
    if device == "cuda":
        return device_time.measure(fn)
    return {"host_us": timing.host_us_per_call(fn, 20, "cpu")}


def _shrunk(case: ExchangeCase, shrink: int, batch: int) -> ExchangeCase:
    if shrink == 1 and not batch:
        return case
    import dataclasses

    hw = lambda s: (max(1, s[0] // shrink), max(1, s[1] // shrink))  # noqa: E731
    return dataclasses.replace(case, out_hw=hw(case.out_hw), in_hws=tuple(hw(s) for s in case.in_hws),
                               batch=batch or case.batch)


def _tensors(case: ExchangeCase, device: str, dtype: torch.dtype, grad: bool):
    gen = torch.Generator(device=device).manual_seed(0)
    xs = [torch.randn(case.batch, case.channels, h, w, generator=gen, device=device, dtype=dtype)
          .contiguous(memory_format=torch.channels_last).requires_grad_(grad) for h, w in case.in_hws]
    scales = [None] + [(0.5 + torch.rand(case.channels, generator=gen, device=device)).requires_grad_(grad)
                       for _ in case.in_hws[1:]]
    shifts = [None] + [(0.1 * torch.randn(case.channels, generator=gen, device=device)).requires_grad_(grad)
                       for _ in case.in_hws[1:]]
    return xs, scales, shifts


def ops_section(args, device: str, dtype: torch.dtype, copy_gbps: Optional[float]) -> List[Dict[str, Any]]:
    elem = torch.finfo(dtype).bits // 8
    backends = ["reference"] + (["compile"] if args.compile_mode != "none" else []) + [b for b in ("cuda", "triton", "cpu") if hrnet_fast.backends()[b]
                                           and (b != "cpu") == (device == "cuda")]
    rows = []
    for branch in (0, 3):
        for mode, align in (("nearest", False), ("bilinear", False)):
            case = _shrunk(exchange_case("w48", "seg", 4, branch), args.shrink, args.batch)
            for direction in ("forward", "backward"):
                grad = direction == "backward"
                xs, ss, bs = _tensors(case, device, dtype, grad)
                nbytes = case.backward_bytes(elem) if grad else case.forward_bytes(elem)
                for backend in backends:
                    if backend == "compile":
                        ref = torch.compile(hrnet_fast.reference.exchange, dynamic=False)
                        op = lambda: ref(xs, ss, bs, size=case.out_hw, mode=mode, align_corners=align)  # noqa
                    else:
                        op = lambda b=backend: hrnet_fast.exchange(xs, ss, bs, size=case.out_hw, mode=mode,  # noqa
                                                                   align_corners=align, backend=b)
                    name = "eager" if backend == "reference" else backend
                    try:
                        if grad:
                            y = op()
                            g = torch.randn_like(y)
                            wrt = xs + [t for t in ss + bs if t is not None]
                            fn = lambda y=y, g=g, wrt=wrt: torch.autograd.grad(y, wrt, g, retain_graph=True)  # noqa
                        else:
                            def fn(op=op):
                                with torch.no_grad():
                                    return op()
                        t0 = time.perf_counter()
                        fn()
                        first_s = time.perf_counter() - t0
                        m = _measure(fn, device)
                    except Exception as exc:  # noqa: BLE001 - one broken variant must not cost the others
                        m, first_s = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}, None
                    us = m.get("kernel_us")
                    row = {"case": case.id, "mode": mode, "direction": direction, "variant": name, "bytes": nbytes,
                           "first_call_s": first_s, **m}
                    if us and copy_gbps:
                        row["gbps"] = nbytes / (us * 1e-6) / 1e9
                        row["of_copy"] = row["gbps"] / copy_gbps
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def _row_parts(host: HighResolutionModule, i: int, xs: List[torch.Tensor]):
    """Row i of `host` (eval) split into the part every path shares (the 1x1
    convs and the earlier chain links, BN folded) and the tail's arguments:
    the exchange inputs and the chains' last convs as (a, w, b) conv terms."""
    row = host.fuse_layers[i]
    inputs, convs = [xs[i]], []
    for j, layer in enumerate(row):
        if j > i:
            w, b = fold(layer[0], layer[1])
            inputs.append(F.conv2d(xs[j], w, b))
        elif j < i:
            a = xs[j]
            for link in list(layer)[:-1]:
                w, b = fold(link[0], link[1])
                a = F.relu(F.conv2d(a, w, b, stride=2, padding=1))
            w, b = fold(layer[-1][0], layer[-1][1])
            convs.append((a, w, b))
    return inputs, convs


def _eager_row(host: HighResolutionModule, i: int, xs: List[torch.Tensor]) -> torch.Tensor:
    y = None
    for j, layer in enumerate(host.fuse_layers[i]):
        t = xs[j] if j == i else layer(xs[j])
        if j > i:
            t = F.interpolate(t, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
        y = t if y is None else y + t
    return torch.relu(y)


def rows_section(args, device: str, dtype: torch.dtype, copy_gbps: Optional[float],
                 doc_peak: Optional[float]) -> List[Dict[str, Any]]:
    channels = tuple(ARCHS["w48"]["stage4"].channels)
    host = HighResolutionModule(list(channels), (1,) * 4, channels, "BASIC", True, "bilinear")
    randomize_batchnorm(host)
    host = host.eval().to(device, dtype).to(memory_format=torch.channels_last)
    batch = args.batch or 8
    h0, w0 = 128 // args.shrink, 256 // args.shrink
    gen = torch.Generator(device=device).manual_seed(0)
    xs = [torch.randn(batch, c, max(1, h0 >> k), max(1, w0 >> k), generator=gen, device=device, dtype=dtype)
          .contiguous(memory_format=torch.channels_last) for k, c in enumerate(channels)]
    elem = torch.finfo(dtype).bits // 8
    tails = ["triton"] if hrnet_fast.backends()["triton"] and device == "cuda" else []
    tails += ["cuda"] if hrnet_fast.backends()["cuda"] and device == "cuda" else ["cpu"] if device == "cpu" else []
    out = []
    for i in (2, 3):
        with torch.no_grad():
            inputs, convs = _row_parts(host, i, xs)
            size = tuple(xs[i].shape[-2:])
            flops = sum(2 * batch * size[0] * size[1] * w.shape[0] * w.shape[1] * 9 for _, w, _ in convs)
            nbytes = elem * (sum(t.numel() for t in inputs) + sum(a.numel() + w.numel() for a, w, _ in convs)
                             + batch * channels[i] * size[0] * size[1])
            variants: Dict[str, Callable[[], Any]] = {}
            for b in tails:
                variants[f"tail[{b}]"] = lambda b=b: hrnet_fast.exchange(inputs, convs=convs, size=size,
                                                                         mode="bilinear", backend=b)
            variants["row[eager]"] = lambda: _eager_row(host, i, xs)
            for b in tails:
                def full(b=b):
                    ins, cvs = _row_parts(host, i, xs)
                    return hrnet_fast.exchange(ins, convs=cvs, size=size, mode="bilinear", backend=b)
                variants[f"row[{b}]"] = full
            if args.compile_mode != "none":
                compiled = torch.compile(lambda: _eager_row(host, i, xs),
                                         mode=None if args.compile_mode == "default" else args.compile_mode)
                variants[f"row[compile:{args.compile_mode}]"] = compiled
            ref = _eager_row(host, i, xs).float()
            for name, fn in variants.items():
                try:
                    t0 = time.perf_counter()
                    y = fn()
                    first_s = time.perf_counter() - t0
                    err = ((y.float() - ref).norm() / ref.norm()).item()
                    m = _measure(fn, device)
                except Exception as exc:  # noqa: BLE001
                    m, first_s, err = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}, None, None
                row = {"row": i, "variant": name, "flops": flops, "tail_bytes": nbytes, "rel_err_vs_eager": err,
                       "first_call_s": first_s, **m}
                us = m.get("kernel_us")
                if us and name.startswith("tail"):
                    row["tflops"] = flops / (us * 1e-6) / 1e12
                    row["flops_bound_us"] = flops / (doc_peak * 1e12) * 1e6 if doc_peak else None
                    if copy_gbps:
                        row["tail_bytes_of_copy_us"] = nbytes / (copy_gbps * 1e9) * 1e6
                out.append(row)
                print(json.dumps(row), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--sections", default="ops,rows")
    p.add_argument("--batch", type=int, default=0, help="0: the cases' own batch (8)")
    p.add_argument("--shrink", type=int, default=1, help="divide every spatial size (quick checks)")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode of the rows' compile variant (default, max-autotune); none: no "
                        "compile variant at all (the ops' compile is always the default mode)")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("exchange_gpu.py: no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # as HRNet's configs set it
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    bw = copy_bandwidth(device, gib=1.0 if device == "cuda" else 0.1, reps=10) if device == "cuda" else None
    copy_gbps = bw["gbps_read_plus_write"] if bw else None
    doc: Dict[str, Any] = {"device": device_name(device), "torch": torch.__version__, "dtype": str(dtype),
                           "copy_gbps": copy_gbps, "build": hrnet_fast.build_info(),
                           "matmul_tflops": matmul_tflops(device, dtype) if device == "cuda" else None}
    sections = args.sections.split(",")
    if "ops" in sections:
        doc["ops"] = ops_section(args, device, dtype, copy_gbps)
    if "rows" in sections:
        doc["rows"] = rows_section(args, device, dtype, copy_gbps, doc["matmul_tflops"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
