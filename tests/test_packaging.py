"""The source distribution carries what the extension needs, and a wheel
builds from it against the installed torch (CPU-only here, to keep CI short:
the CUDA sources compile in `make install`)."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (ROOT / "setup.py").exists() or shutil.which("git") is None,
                                reason="needs the source checkout")


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


def test_wheel_builds_from_sdist(sdist, tmp_path):
    env = {**os.environ, "HRNET_FAST_SKIP_CUDA": "1", "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", str(sdist),
                    "-w", str(tmp_path)], check=True, env=env, capture_output=True)
    (wheel,) = tmp_path.glob("hrnet_fast-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(n.startswith("hrnet_fast/_C.") and n.endswith(".so") for n in names)
    assert "hrnet_fast/ops.py" in names
