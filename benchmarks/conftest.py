"""Microbenchmarks of hrnet_fast.exchange (pytest-benchmark).

    pytest benchmarks --benchmark-only                  # CPU: a handful of cases, float32
    pytest benchmarks --benchmark-only --exchange-grid full --exchange-compile \
        --benchmark-json out.json --exchange-log out.jsonl   # GPU: full grid, bf16 channels_last

Not collected by `pytest tests` (pyproject's testpaths is tests/ and these
files live outside it).
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hrnet_fast.bench.shapes import compare_with_compile, full_grid, small_grid  # noqa: E402

if importlib.util.find_spec("pytest_benchmark") is None:
    # Without the plugin there is no `benchmark` fixture: collect nothing
    # and say why, instead of erroring on every test.
    collect_ignore_glob = ["test_*.py"]
    print("benchmarks/: pytest-benchmark is not installed; no microbenchmarks collected", file=sys.stderr)

#: Backends that take tensors on each device (the Triton interpreter can run
#: on CPU tensors, far too slowly to benchmark).
BACKENDS = {"cuda": ("reference", "cuda", "triton"), "cpu": ("reference", "cpu")}
DIRECTIONS = ("forward", "backward")


def pytest_addoption(parser):
    group = parser.getgroup("exchange", "hrnet_fast exchange microbenchmarks")
    group.addoption("--exchange-grid", choices=("auto", "small", "full"), default="auto",
                    help="cases: small (a handful), full (W18/W32/W48 x pose/seg x stages 2-4 x branches); "
                         "auto = full on CUDA, small on CPU")
    group.addoption("--exchange-device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto = cuda when available")
    group.addoption("--exchange-dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                    help="auto = bfloat16 channels_last on CUDA, float32 NCHW on CPU")
    group.addoption("--exchange-compile", action="store_true",
                    help="also time torch.compile of the reference on W48 seg stage 4, output branch 0")
    group.addoption("--exchange-rounds", type=int, default=0, help="timed rounds per benchmark (0: 20 GPU, 10 CPU)")
    group.addoption("--exchange-log", default=None,
                    help="append one JSON line per benchmark here as it finishes (survives a timeout)")


class BenchEnv:
    """Device, dtype, layout and round counts of this run."""

    def __init__(self, config) -> None:
        dev = config.getoption("--exchange-device")
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev
        dt = config.getoption("--exchange-dtype")
        if dt == "auto":
            dt = "bfloat16" if self.device == "cuda" else "float32"
        self.dtype = getattr(torch, dt)
        self.channels_last = self.device == "cuda"
        rounds = config.getoption("--exchange-rounds")
        self.rounds = rounds or (20 if self.device == "cuda" else 10)
        self.warmup = 5 if self.device == "cuda" else 2
        self.log = config.getoption("--exchange-log")


def pytest_generate_tests(metafunc):
    if "xcase" not in metafunc.fixturenames:
        return
    env = BenchEnv(metafunc.config)
    grid = metafunc.config.getoption("--exchange-grid")
    if grid == "auto":
        grid = "full" if env.device == "cuda" else "small"
    cases = full_grid() if grid == "full" else small_grid()
    with_compile = metafunc.config.getoption("--exchange-compile")
    params = []
    for case in cases:
        backends = BACKENDS[env.device] + (("compile",) if with_compile and compare_with_compile(case) else ())
        for backend in backends:
            for direction in DIRECTIONS:
                params.append(pytest.param(case, backend, direction, id=f"{case.id}-{backend}-{direction}"))
    metafunc.parametrize(("xcase", "backend", "direction"), params)


@pytest.fixture(scope="session")
def bench_env(request) -> BenchEnv:
    return BenchEnv(request.config)
