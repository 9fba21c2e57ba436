"""What the build says about CUDA. Runs on CPU machines: a CUDA build must
report itself and its targets; a CPU-only build is skipped. Every kernel is
compiled with `ptxas -v` where nvcc is found, and must not spill."""
from __future__ import annotations

import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import textwrap

import pytest
import torch

import hrnet_fast

INFO = hrnet_fast.build_info()
needs_cuda_build = pytest.mark.skipif(not INFO["cuda_compiled"], reason="extension built without CUDA")


@needs_cuda_build
def test_cuda_build_reports_targets():
    archs = INFO["cuda_arch_list"]
    assert archs, "a CUDA build lists the architectures it compiled for"
    for arch in archs:
        assert re.fullmatch(r"\d+\.\d+a?(\+PTX)?", arch), arch


@needs_cuda_build
def test_cuda_kernels_registered():
    # The CUDA kernels are registered under the CUDA key of both ops.
    for op in ("hrnet_fast::exchange", "hrnet_fast::exchange_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op


@needs_cuda_build
def test_cuda_backend_usable_iff_device():
    assert hrnet_fast.backends()["cuda"] == torch.cuda.is_available()


def test_cpu_only_build_has_no_targets():
    if INFO["cuda_compiled"]:
        pytest.skip("extension built with CUDA")
    assert INFO["cuda_arch_list"] == []
    assert hrnet_fast.backends()["cuda"] is False


# --- registers and spills of every shipped kernel ------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


def _nvcc():
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    for path in (os.path.join(home, "bin", "nvcc"), shutil.which("nvcc")):
        if path and os.path.exists(path):
            return path
    return None


def _archs():
    """sm_XX of the architectures the extension is built for (8.0 and 9.0
    when it was built without CUDA)."""
    listed = INFO["cuda_arch_list"] if INFO["cuda_compiled"] else ["8.0", "9.0"]
    return sorted({"sm_" + a.split("+")[0].replace(".", "") for a in listed})


_FUNC = re.compile(r"Compiling entry function '(\S+)' for '(\S+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas(log: str):
    """(kernel, arch, registers, stack, spill stores, spill loads) per kernel
    of a `ptxas -v` log."""
    rows, name, arch, frame = [], None, None, (0, 0, 0)
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            name, arch = m.groups()
            continue
        m = _FRAME.search(line)
        if m:
            frame = tuple(int(v) for v in m.groups())
            continue
        m = _REGS.search(line)
        if m and name:
            rows.append((name, arch, int(m.group(1)), *frame))
            name = None
    return rows


_KINDS = {"0": "Same", "1": "Shift", "2": "Lin", "3": "Near"}


def _demangle(names):
    """Readable kernel names: template arguments kept, parameters dropped."""
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return list(names)
    readable = []
    for s in out.splitlines():
        s = re.sub(r"\(hrnet_fast::cuda::(Fwd|Bwd|Sum)Params.*$", "", s).replace("hrnet_fast::cuda::", "")
        readable.append(re.sub(r"\(Kind\)(\d)", lambda m: _KINDS.get(m.group(1), m.group(1)), s))
    return readable


def test_ptxas_log_parser():
    log = textwrap.dedent("""\
        ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
        ptxas info    : Function properties for _Z1kv
            8 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads
        ptxas info    : Used 48 registers, used 1 barriers
        """)
    assert parse_ptxas(log) == [("_Z1kv", "sm_90", 48, 8, 16, 12)]


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found")
def test_kernels_do_not_spill(tmp_path):
    """Every kernel of csrc/cuda/*.cu (the torch-free launch units, which
    instantiate all shipped kernels), compiled as the extension compiles them
    for each of its architectures with `ptxas -v`: no register spills and no
    local-memory stack frames. The registers per kernel are reported."""
    nvcc = _nvcc()
    assert UNITS, "no CUDA launch units found"
    jobs = [(unit, arch) for unit in UNITS for arch in _archs()]

    def compile_one(job):
        unit, arch = job
        out = tmp_path / f"{os.path.basename(unit)}.{arch}.cubin"
        cmd = [nvcc, "-std=c++17", "-O3", "-lineinfo", "--expt-relaxed-constexpr", f"-arch={arch}", "-cubin",
               "-Xptxas", "-v", "-I", os.path.join(ROOT, "kernels"), "-I", os.path.join(ROOT, "csrc", "cuda"),
               unit, "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return parse_ptxas(proc.stdout + proc.stderr)

    workers = max(1, min(len(jobs), int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        rows = [row for rows in pool.map(compile_one, jobs) for row in rows]
    assert rows, "ptxas reported no kernels"
    names = _demangle([r[0] for r in rows])
    report = sorted(zip(names, rows), key=lambda nr: (nr[1][1], nr[0]))
    print("\nregisters per kernel (arch, registers, stack bytes, spill stores, spill loads):")
    for name, (_, arch, regs, stack, stores, loads) in report:
        print(f"  {arch}  {regs:4d} regs  stack {stack:3d}  spill {stores}/{loads}  {name}")
    bad = [f"{arch} {name}: stack {stack}, spill stores {stores}, loads {loads}"
           for name, (_, arch, regs, stack, stores, loads) in report if stack or stores or loads]
    assert not bad, "kernels using local memory:\n" + "\n".join(bad)
