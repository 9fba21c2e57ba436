"""Command line: `hrnet-fast bench` (also `python -m hrnet_fast bench`).

Times an HRNet model eager, converted to the fused exchange, optimized and
compiled, side by side in one process, and prints a table:

    hrnet-fast bench                                     # this device's default case(s)
    hrnet-fast bench --device cpu --model hrnet_w18_small --size 128x96 --batch 1 \
        --iters 3 --json out.json --plot out.png
    hrnet-fast bench --device cuda --model w48 --head seg --size 1024x2048 \
        --dtype bfloat16 --channels-last --variants eager,fused,compile

Exit status: 0 when every variant ran, 1 when one failed (the table and the
files still show the others), 2 for bad arguments (checked before anything
runs: the output paths, the device, the backends), 124 when SIGTERM (e.g.
from `timeout`) stopped the run early: what was measured is still printed
and written.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from typing import List, Optional, Sequence

from .bench import config, plotting

EPILOG = """\
models: a timm HRNet name (hrnet_w18_small, hrnet_w18_small_v2, hrnet_w18, hrnet_w18_ssld,
hrnet_w30, hrnet_w32, hrnet_w40, hrnet_w44, hrnet_w48, hrnet_w48_ssld, hrnet_w64; created with
pretrained=False) or an hrnet_fast architecture (w18_small_v1, w18_small_v2, w18, w32, w48, w64)
with --head seg|pose.
Without --model: on CPU hrnet_w18_small 4x3x256x192, 100 rounds or 180 s of timed rounds; on
CUDA w48 seg 1x3x1024x2048 and w32 pose 32x3x256x192; eager, fused, optimized and compile.
The time budget trims the timed rounds only: first calls run to their end, and torch.compile's
(a minute or two on 2 CPU cores, five on a loaded machine) can take longer than the budget.
A model of your own: --model package.module:factory, a zero-argument callable returning the
nn.Module (importable from the current directory or PYTHONPATH).
Variants: eager (unconverted), fused (hrnet_fast.convert; on CUDA with --backend auto one
fused[B] per available GPU backend), fused[B] (a named backend), optimized and optimized[B]
(hrnet_fast.optimize: the whole-model inference path; its setup and first call are reported),
compile and compile[MODE] (torch.compile of the unconverted model; its first call is reported
as compile time), fused+compile (torch.compile of the converted model)."""


def _size(text: str):
    try:
        return config.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _variants(text: str) -> List[str]:
    try:
        return config.parse_variants(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `hrnet-fast` argument parser."""
    parser = argparse.ArgumentParser(prog="hrnet-fast", description="hrnet_fast tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    b = sub.add_parser("bench", help="time an HRNet model eager vs fused vs optimized vs compiled",
                       description="Time an HRNet model eager, fused (hrnet_fast.convert), optimized "
                                   "(hrnet_fast.optimize) and torch.compile'd, side by side from one process, "
                                   "in interleaved rounds.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--model", help="timm HRNet name, hrnet_fast architecture or package.module:factory "
                                   "(default: per device)")
    b.add_argument("--head", choices=config.HEADS, help="head of an hrnet_fast architecture")
    b.add_argument("--size", type=_size, metavar="HxW", help="input height x width, e.g. 256x192")
    b.add_argument("--batch", type=_positive, metavar="N", help="images per call")
    b.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    b.add_argument("--dtype", choices=tuple(config.DTYPES), help="default: float32")
    b.add_argument("--channels-last", action="store_true", default=None, help="channels_last model and input")
    b.add_argument("--train", action="store_true", default=None,
                   help="time a training step (forward, loss, backward, SGD step) instead of inference")
    b.add_argument("--variants", type=_variants, metavar="LIST",
                   help="comma-separated: eager, fused[BACKEND], compile[MODE], fused[BACKEND]+compile[MODE], "
                        "optimized[BACKEND] (default: eager,fused,optimized,compile)")
    b.add_argument("--backend", choices=config.BACKEND_CHOICES,
                   help="backend of the fused and optimized variants (default auto)")
    b.add_argument("--iters", type=_positive, metavar="N", help="timed paired rounds")
    b.add_argument("--warmup", type=_positive, metavar="N", help="warm-up rounds, the compiling one included")
    b.add_argument("--time-budget", type=_seconds, metavar="S", dest="time_budget_s",
                   help="per case: fewer timed rounds (at least 3) when --iters would not fit in S seconds; "
                        "it does not bound the first calls (torch.compile's compiles then)")
    b.add_argument("--seed", type=int, help="seed of weights, BatchNorm statistics and input")
    b.add_argument("--json", metavar="PATH", help="write the results as JSON")
    b.add_argument("--plot", metavar="PATH", help="write a bar chart, PNG, PDF or SVG by the file's suffix "
                                                  "(needs matplotlib)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(subparser=b)  # so errors are reported as `hrnet-fast bench: error: ...`
    m = sub.add_parser("memory", help="what a training step keeps and costs: eager, fused, lean, checkpoint, compile",
                       description="Saved-for-backward MiB, step peak MiB, step time and the largest batch within "
                                   "a memory budget of a training step, eager against hrnet_fast.convert with "
                                   "memory=None / 'lean' / 'checkpoint' and torch.compile, from one process "
                                   "(hrnet_fast.bench.training_memory).")
    m.add_argument("--model", default="hrnet_w18",
                   help="a timm HRNet name (its features_only backbone), ARCH-seg / ARCH-pose of this package "
                        "(e.g. w48-seg), or package.module:factory (default hrnet_w18)")
    m.add_argument("--size", type=_size, default=(256, 512), metavar="HxW", help="input size (default 256x512)")
    m.add_argument("--batch", type=_positive, default=2, metavar="N", help="images per step (default 2)")
    m.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    m.add_argument("--variants", default=",".join(_training_variants()), metavar="LIST",
                   help=f"comma-separated, of {', '.join(_training_variants())}")
    m.add_argument("--autocast", choices=("bfloat16", "float16"), help="run the steps under torch.autocast "
                   "in this dtype (weights stay float32)")
    m.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    m.add_argument("--rounds", type=_positive, default=3, metavar="N", help="timed paired rounds (default 3)")
    m.add_argument("--budget-mib", type=float, default=24 * 1024, metavar="MIB",
                   help="memory budget for the largest-batch column (default 24576)")
    m.add_argument("--json", metavar="PATH", help="write the results as JSON")
    m.add_argument("--plot", metavar="PATH", help="write a chart, PNG, PDF or SVG by the file's suffix")
    m.set_defaults(subparser=m)
    return parser


def _training_variants():
    from .bench.training_memory import VARIANTS

    return VARIANTS


def memory(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `hrnet-fast memory`; return the exit status."""
    import json

    import torch

    from .bench import training_memory
    from .bench.runner import check_device

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in training_memory.VARIANTS]
    try:
        if unknown or not variants:
            raise ValueError(f"--variants: unknown {unknown or 'empty list'}; expected some of "
                             f"{', '.join(training_memory.VARIANTS)}")
        for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
            if path is not None:
                check_output(path, flag)
        if args.plot is not None:
            plotting.check_path(args.plot)
        check_device(args.device)
        training_memory.build(args.model)  # a bad model name fails now, not after the first variants
    except (ValueError, RuntimeError, ImportError) as exc:
        parser.error(str(exc))
    quiet_toolkit_notice()
    report = training_memory.run(args.model, args.size, args.batch, variants, args.rounds, args.device,
                                 args.budget_mib, log=lambda s: print(f"hrnet-fast memory: {s}", file=sys.stderr),
                                 autocast=getattr(torch, args.autocast) if args.autocast else None,
                                 channels_last=args.channels_last)
    print(training_memory.table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        training_memory.plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 1 if any(r["error"] for r in report["rows"]) else 0


def cases_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> List[config.Case]:
    """The cases an argument set asks for; parser.error() on bad combinations."""
    from .bench.models import check_model_name

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    defaults = config.default_cases(device)
    overrides = dict(size=args.size, batch=args.batch, dtype=args.dtype, channels_last=args.channels_last,
                     train=args.train, variants=args.variants, backend=args.backend, iters=args.iters,
                     warmup=args.warmup, time_budget_s=args.time_budget_s, seed=args.seed)
    if args.model is None:
        if args.head is not None:
            parser.error("--head needs --model (an hrnet_fast architecture)")
        return _explicit_iters([config.with_overrides(c, **overrides) for c in defaults], args)
    if args.head is not None and args.model not in config.OWN_ARCHS and not config.is_user_model(args.model):
        parser.error(f"--head applies to hrnet_fast architectures ({', '.join(config.OWN_ARCHS)}), "
                     f"not to {args.model!r}")
    try:
        check_model_name(args.model, args.head)
    except ValueError as exc:
        parser.error(str(exc))
    # Start from the device's default case with the same head (size, batch).
    like = [c for c in defaults if c.head == args.head] or defaults
    base = dataclasses.replace(like[0], model=args.model, head=args.head)
    cases = [config.with_overrides(base, **overrides)]
    return _explicit_iters(cases, args)


def _explicit_iters(cases: List[config.Case], args: argparse.Namespace) -> List[config.Case]:
    """--iters without --time-budget means exactly that many rounds."""
    if args.iters is not None and args.time_budget_s is None:
        return [dataclasses.replace(c, time_budget_s=None) for c in cases]
    return cases


def check_output(path: str, flag: str) -> None:
    """Raise ValueError when `path` cannot be written as a file (a folder,
    under a file, not writable): said before the run, not after it."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ValueError(f"{flag} {path}: is a directory; give a file path, e.g. {os.path.join(path, 'bench')}"
                         f"{'.json' if flag == '--json' else '.png'}")
    if os.path.exists(full):
        if not os.access(full, os.W_OK):
            raise ValueError(f"{flag} {path}: the file exists and is not writable")
        return
    # The folders are created at write time: the nearest existing one must
    # be a writable folder.
    parent = os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot create files in {parent}")


def check_backends(cases: Sequence[config.Case]) -> None:
    """Raise ValueError when a backend a variant names (--backend, fused[B],
    optimized[B]) cannot run here, or not on the case's device, as
    --device cuda is checked: before anything is built."""
    from .backend import BACKENDS

    for case in cases:
        for variant in config.expand_variants(case.variants, case.backend, case.device):
            name = config.fused_backend(variant, case.backend) if variant.startswith(("fused", "optimized")) \
                else "auto"
            if name == "auto":
                continue
            backend = BACKENDS[name]
            reason = backend.unavailable_reason()
            if reason is not None:
                raise ValueError(f"backend {name!r} (variant {variant}) cannot run here: {reason}")
            devices = backend.supported_devices()
            if "any" not in devices and case.device not in devices:
                raise ValueError(f"backend {name!r} (variant {variant}) runs on {' or '.join(sorted(devices))} "
                                 f"tensors, not on --device {case.device}")


class _NoToolkitNotice(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." notice,
    logged when torch.compile first imports torch.utils.cpp_extension on a
    machine that has a CUDA toolkit but no GPU: it concerns building
    extensions, not the benchmark."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def quiet_toolkit_notice() -> None:
    """Install `_NoToolkitNotice` on torch's cpp_extension logger (once)."""
    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoToolkitNotice) for f in log.filters):
        log.addFilter(_NoToolkitNotice())


def bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `hrnet-fast bench`; return the exit status."""
    from .bench import reporting
    from .bench.runner import Interrupted, check_device, run_case

    try:
        for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
            if path is not None:
                check_output(path, flag)
        if args.plot is not None:
            plotting.check_path(args.plot)
    except ValueError as exc:
        parser.error(str(exc))
    cases = cases_from_args(args, parser)
    try:
        check_device(cases[0].device)
        check_backends(cases)
    except (RuntimeError, ValueError) as exc:
        parser.error(str(exc))
    quiet_toolkit_notice()
    if args.plot is not None and not plotting.have_matplotlib():  # said now, not after the run
        print(f"hrnet-fast bench: matplotlib is not installed; no plot will be written to {args.plot}",
              file=sys.stderr)

    def _stop(signum, frame):
        raise Interrupted(f"signal {signum}")

    # `timeout` sends SIGTERM: finish with what was measured instead of dying.
    previous = signal.signal(signal.SIGTERM, _stop)
    reports = []
    try:
        for case in cases:
            try:
                report = run_case(case, show_progress=not args.no_progress,
                                  log=lambda s: print(f"hrnet-fast bench: {s}", file=sys.stderr, flush=True))
            except (Exception, Interrupted) as exc:
                hint = ""
                if case.size[0] % 32 or case.size[1] % 32:
                    hint = " (hint: HRNet models with nearest upsampling need H and W divisible by 32)"
                what = "stopped by SIGTERM (time limit)" if isinstance(exc, Interrupted) else \
                    f"{type(exc).__name__}: {exc}{hint}"
                print(f"hrnet-fast bench: error: {case.label}: {what}", file=sys.stderr)
                return 1
            reporting.print_report(report)
            reports.append(report)
            if args.json:  # after every case, so a later failure keeps the earlier ones
                reporting.write_json(reports, args.json)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(f"wrote {args.json}")
    if args.plot and plotting.have_matplotlib():
        plotting.plot(reports, args.plot)
        print(f"wrote {args.plot}")
    if any(r.get("interrupted") for r in reports):
        print("hrnet-fast bench: error: stopped early by SIGTERM (time limit); the figures above come from "
              "fewer rounds than asked", file=sys.stderr)
        return 124
    failed = [f"{e['variant']} ({r['model']})" for r in reports for e in r.get("errors", [])]
    if failed:
        print(f"hrnet-fast bench: error: variant(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `hrnet-fast` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return bench(args, args.subparser)
    if args.command == "memory":
        return memory(args, args.subparser)
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
