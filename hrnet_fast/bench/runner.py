"""Run one benchmark case: build every variant from identical weights, warm
up, time paired rounds, measure peak memory and the error against eager.

Variants:
    eager             the model as built (unconverted)
    fused[B]          hrnet_fast.convert(copy, backend=B)
    fused             hrnet_fast.convert(copy, backend=case.backend)
    compile[M]        torch.compile(copy, mode=M) of the unconverted model
    fused[B]+compile  torch.compile of the converted model
    optimized[B]      hrnet_fast.optimize(copy, example_input, backend=B)

Every variant gets its own deep copy of one freshly built model, so all
start from the same weights; in train mode each has its own SGD optimizer,
and the relative error compares the forward outputs of the first training
step, when the copies are still identical.
"""
from __future__ import annotations

import copy
import math
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from . import memory, timing
from .config import Case, compile_mode, expand_variants, fused_backend
from .models import build_model, make_input, place
from .progress import Progress


class VariantError(RuntimeError):
    """A variant could not be built or run."""


class Interrupted(BaseException):
    """Raised (by a signal handler the caller installs, e.g. for SIGTERM from
    `timeout`) to stop a run early: the variants and rounds done so far are
    still reported."""


@dataclass
class Variant:
    """A model prepared for timing and what its first call gave."""

    name: str
    step: Optional[Callable[[], Any]] = None
    first_call_s: Optional[float] = None
    # Building the variant (copy, convert / optimize / compile wrapper) and
    # its first call (where torch.compile compiles): what a deployment waits.
    setup_s: Optional[float] = None
    output: Optional[Tensor] = None
    error: Optional[str] = None
    backend: Optional[str] = None


def _tensors(out: Any) -> List[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    return []


def flat_output(out: Any) -> Tensor:
    """All tensors of a model output as one float64 CPU vector."""
    parts = [t.detach().to(device="cpu", dtype=torch.float64).reshape(-1) for t in _tensors(out)]
    if not parts:
        raise VariantError(f"the model returned no tensor ({type(out).__name__})")
    return torch.cat(parts)


def relative_error(out: Tensor, ref: Tensor) -> float:
    """||out - ref|| / ||ref|| (absolute when ref is all zeros)."""
    if out.shape != ref.shape:
        return math.inf
    den = torch.linalg.vector_norm(ref).item()
    num = torch.linalg.vector_norm(out - ref).item()
    return num / den if den > 0 else num


def loss_of(out: Any) -> Tensor:
    """The training benchmarks' loss: the mean square of every output tensor."""
    return sum(t.float().square().mean() for t in _tensors(out))


def _convert(model: nn.Module, backend: str) -> nn.Module:
    import hrnet_fast

    convert = getattr(hrnet_fast, "convert", None)
    if convert is None:
        raise VariantError("the fused variant needs hrnet_fast.convert (issue 3), which this build of "
                           "hrnet_fast does not have yet")
    return convert(model, backend=backend)


def _prepare(name: str, base: nn.Module, case: Case, x: Tensor) -> nn.Module:
    model = place(copy.deepcopy(base), case)
    if name.startswith("optimized"):
        import hrnet_fast

        if not hasattr(hrnet_fast, "optimize"):
            raise VariantError("the optimized variant needs hrnet_fast.optimize, which this build does not have")
        if case.train:
            raise VariantError("optimized is an inference path; it cannot time a training step")
        return hrnet_fast.optimize(model, x, backend=fused_backend(name, case.backend))
    if name.startswith("fused"):
        model = _convert(model, fused_backend(name, case.backend))
    mode = compile_mode(name)
    if mode is not None:
        return torch.compile(model, mode=None if mode == "default" else mode)
    return model


def make_step(model: nn.Module, x: Tensor, train: bool) -> Callable[[], Any]:
    """The timed unit: an inference call, or a full training step
    (zero grads, forward, loss, backward, SGD step) returning the output."""
    if not train:
        def infer() -> Any:
            with torch.no_grad():
                return model(x)

        return infer
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def train_step() -> Any:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss_of(out).backward()
        opt.step()
        return out

    return train_step


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def device_name(device: str) -> str:
    """The hardware behind `device`, in words."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def check_device(device: str) -> None:
    """Raise a clear error when `device` cannot be used here."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device "
                           f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")


def run_case(case: Case, show_progress: bool = True, log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Benchmark `case`; return the JSON-ready report (see hrnet_fast.bench.reporting)."""
    check_device(case.device)
    import hrnet_fast

    t_start = time.perf_counter()
    if case.device == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        memory.settle_allocator()
    names = expand_variants(case.variants, case.backend, case.device)
    base = build_model(case)
    x = make_input(case)
    variants: Dict[str, Variant] = {n: Variant(n, backend=fused_backend(n, case.backend)
                                               if n.startswith(("fused", "optimized")) else None) for n in names}
    n = len(names)
    interrupted = False
    warm_rounds = max(case.warmup - 1, 1)
    total = n + warm_rounds * n + case.iters * n + n
    with Progress(total, f"{case.label}: first calls", enabled=show_progress) as bar:
        # First call of each variant: builds it (compile happens here), gives
        # the output compared against eager.
        for name in names:
            v = variants[name]
            bar.describe(f"{case.model}: first call of {name}")
            try:
                timing.synchronize(case.device)
                t_setup = time.perf_counter()
                model = _prepare(name, base, case, x)
                v.step = make_step(model, x, case.train)
                timing.synchronize(case.device)
                t0 = time.perf_counter()
                out = v.step()
                timing.synchronize(case.device)
                v.first_call_s = time.perf_counter() - t0
                v.setup_s = time.perf_counter() - t_setup
                v.output = flat_output(out)
                del out
            except Interrupted:
                if name == "eager":
                    raise
                v.error, v.step = "stopped by the time limit during its first call (compile/warm-up)", None
                interrupted = True
                log(f"variant {name}: {v.error}; reporting the others with a short run")
            except Exception as exc:  # noqa: BLE001 - a broken variant must not hide the others
                if name == "eager":
                    raise
                v.error, v.step = _short(exc), None
                log(f"variant {name} failed: {v.error}")
            bar.advance()
            if interrupted:
                break
        for name in names:  # variants never reached after an interruption
            if variants[name].step is None and variants[name].error is None:
                variants[name].error = "not run: stopped by the time limit"
        ok = {name: v.step for name, v in variants.items() if v.step is not None}
        samples: Dict[str, List[float]] = {name: [] for name in ok}
        mem: Dict[str, Any] = {}
        method = None
        rounds = 0
        try:
            bar.describe(f"{case.model}: warm-up")
            warm = timing.paired_rounds(ok, 1 if interrupted else warm_rounds, case.device, on_call=bar.advance)
            round_ms = sum(min(s) for s in warm.values())
            budget = None if case.time_budget_s is None else case.time_budget_s - (time.perf_counter() - t_start)
            rounds = min(3, case.iters) if interrupted else timing.rounds_within(budget, round_ms, case.iters)
            bar.set_total(n + warm_rounds * n + rounds * len(ok) + n)
            bar.describe(f"{case.model}: timing {rounds} paired rounds")
            deadline = None if case.time_budget_s is None else t_start + case.time_budget_s
            timing.paired_rounds(ok, rounds, case.device, on_call=bar.advance, into=samples, deadline=deadline)
            if not interrupted:
                bar.describe(f"{case.model}: peak memory")
                for name, step in ok.items():
                    mem[name], method = memory.peak_memory_mb(step, case.device)
                    bar.advance()
        except Interrupted:
            interrupted = True
            log("stopped by the time limit: reporting the rounds done so far")
        if not samples.get("eager"):
            raise VariantError("stopped before any timed round of eager completed")
        rounds = min(len(v) for v in samples.values() if v)
        for name in [k for k, v in samples.items() if not v]:
            variants[name].error, variants[name].step = "stopped by the time limit before a timed round", None
    eager = variants["eager"]
    eager_median = timing.summarize(samples["eager"])["median_ms"]
    results: List[Dict[str, Any]] = []
    errors: List[Dict[str, str]] = []
    for name in names:
        v = variants[name]
        if v.step is None:
            errors.append({"variant": name, "error": v.error or "unknown error"})
            continue
        stats = timing.summarize(samples[name])
        results.append({
            "variant": name,
            **stats,
            "peak_mem_mb": mem.get(name),
            "rel_err_vs_eager": relative_error(v.output, eager.output),
            "speedup_vs_eager": eager_median / stats["median_ms"],
            "speedup_paired": timing.paired_speedup(samples["eager"], samples[name]),
            "throughput_img_s": case.batch * 1e3 / stats["median_ms"],
            "compile_s": v.first_call_s if compile_mode(name) is not None else None,
            "first_call_s": v.first_call_s,
            "setup_s": v.setup_s,
            "backend": v.backend,
            "samples": len(samples[name]),
        })
    return {
        "device": case.device,
        "torch": torch.__version__,
        "model": case.model,
        "input": [case.batch, 3, case.size[0], case.size[1]],
        "dtype": case.dtype,
        "train": case.train,
        "results": results,
        "errors": errors,
        "head": case.head,
        "label": case.label,
        "device_name": device_name(case.device),
        "channels_last": case.channels_last,
        "rounds": rounds,
        "warmup_rounds": warm_rounds + 1,
        "timer": "cuda_events" if case.device == "cuda" else "perf_counter",
        "peak_mem_method": method,
        "hrnet_fast": getattr(hrnet_fast, "__version__", None),
        "backends": hrnet_fast.backends(),
        "interrupted": interrupted,
        "wall_s": time.perf_counter() - t_start,
    }
