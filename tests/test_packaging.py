"""The source distribution carries what the extension and the tests need,
and a wheel builds from it against the installed torch (CPU-only here, to
keep CI short: the CUDA sources compile in `make install`) and requires
exactly that torch; an extension that does not load says why (issue 24)."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# A git checkout (an unpacked sdist has no history to archive).
pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None,
                                reason="needs the git checkout")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    # A clean export of the tracked tree, so build files of this checkout do not leak in.
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(src / "tree.tar"), "HEAD"],
                   check=True)
    with tarfile.open(src / "tree.tar") as tar:
        tar.extractall(src / "tree", filter="data")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(out)], cwd=src / "tree", check=True,
                   env={**os.environ, "HRNET_FAST_SKIP_CUDA": "1"}, capture_output=True)
    (path,) = out.glob("hrnet_fast-*.tar.gz")
    return path


def test_sdist_carries_sources(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ["setup.py", "csrc/ops.cpp", "csrc/exchange.h", "csrc/cpu/exchange_cpu.cpp",
                   "csrc/cpu/exchange_backward_cpu.cpp", "csrc/cuda/exchange_cuda.cpp", "kernels/interp.h",
                   "kernels/exchange_cuda.cuh", "hrnet_fast/ops.py", "hrnet_fast/triton/forward.py"]:
        assert needed in names, needed


def _tracked(*patterns: str) -> set:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", *patterns], check=True, capture_output=True,
                         text=True).stdout
    return set(out.split())


def test_sdist_carries_the_tests_and_what_they_read(sdist):
    """`make test` from an unpacked sdist: the tests, the C++ unit tests and
    the benchmark scripts the tests run are in it (issue 24.16)."""
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = _tracked("tests", "kernels", "csrc", "hrnet_fast/*.py", "benchmarks/*.py", "benchmarks/gpu_check.sh")
    needed |= {"Makefile", "CMakeLists.txt", "requirements.txt", "pyproject.toml", "setup.py", "README.md"}
    assert len(needed) > 100 and not needed - names, sorted(needed - names)
    assert not any(n.startswith("benchmarks/results/") for n in names)


def test_isolated_build_pins_the_supported_torch():
    """An isolated `pip install .` compiles against the torch the project
    supports (requirements.txt's pin), never whichever is newest."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as f:
        requires = tomllib.load(f)["build-system"]["requires"]
    (pin,) = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip().startswith("torch==")]
    assert pin in requires, (pin, requires)


def test_a_missing_extension_is_said_once_with_the_reason():
    """Issue 24.14: a binary that cannot load (here: its import blocked)
    leaves every op on the reference, and the import says so once, naming
    why."""
    code = ("import sys, warnings\n"
            "sys.modules['hrnet_fast._C'] = None\n"
            "warnings.simplefilter('always')\n"
            "import torch, hrnet_fast, hrnet_fast.ops, hrnet_fast.convert\n"
            "print(hrnet_fast.build_info()['extension_loaded'])\n"
            "x = torch.randn(1, 2, 4, 4)\n"
            "assert torch.equal(hrnet_fast.exchange([x]), torch.relu(x))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["False"]
    assert res.stderr.count("hrnet_fast._C did not load") == 1, res.stderr
    assert "import of hrnet_fast._C halted" in res.stderr and "--no-build-isolation" in res.stderr


def test_the_message_names_the_torch_the_binary_was_built_for(monkeypatch):
    from hrnet_fast import _ext

    monkeypatch.setattr(_ext, "_built_for", lambda: "torch==2.0.0")
    text = _ext.not_loaded_message(ImportError("undefined symbol: _ZN3c10"))
    assert "built against torch==2.0.0" in text and f"torch {torch.__version__} is running" in text
    assert "undefined symbol" in text


def test_wheel_builds_from_sdist(sdist, tmp_path):
    env = {**os.environ, "HRNET_FAST_SKIP_CUDA": "1", "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", str(sdist),
                    "-w", str(tmp_path)], check=True, env=env, capture_output=True)
    (wheel,) = tmp_path.glob("hrnet_fast-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(n.startswith("hrnet_fast/_C.") and n.endswith(".so") for n in names)
    assert "hrnet_fast/ops.py" in names
    # The binary loads only into the torch it was built against: the wheel
    # requires exactly that one (issue 24.14).
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(wheel) as zf:
        requires = [line for line in zf.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    assert requires == [f"Requires-Dist: torch=={torch.__version__.split('+')[0]}"], requires
