"""`make gpu-check` without a GPU stops at once, and its summary reads the
reports the benchmark scripts write (checked on the CPU, since the GPU run
gets one chance)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import summarize  # noqa: E402


def test_no_gpu_stops_before_building(tmp_path):
    env = dict(os.environ, PATH="/usr/bin:/bin", OUT=str(tmp_path))
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "no NVIDIA GPU found" in r.stderr
    assert "nothing was built" in (tmp_path / "gpu_check.log").read_text()


def test_exchange_script_smoke_and_summary(tmp_path):
    out = tmp_path / "exchange_gpu.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "exchange_gpu.py"), "--device", "cpu",
                        "--batch", "1", "--shrink", "32", "--compile-mode", "none", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert {row["variant"] for row in doc["ops"]} == {"eager", "cpu"}
    assert all(row.get("error") is None for row in doc["ops"]), doc["ops"]
    assert {row["variant"] for row in doc["rows"]} >= {"tail[cpu]", "row[eager]", "row[cpu]"}
    assert all(row["rel_err_vs_eager"] < 1e-5 for row in doc["rows"])
    (tmp_path / "steps.tsv").write_text("step\tstatus\tseconds\nbuild\tok\t1\nexchange\tok\t2\n")
    text = summarize.summarize(str(tmp_path))
    assert "all steps ok" in text and "| w48-seg-s4-b0-n1 | nearest | for |" in text and "tail[cpu]" in text


def test_memory_report_in_the_summary(tmp_path):
    # The memory step's JSON (here from a small CPU run) becomes a table.
    aux = tmp_path / "aux"
    aux.mkdir()
    out = aux / "memory_w18_small.json"
    r = subprocess.run([sys.executable, "-m", "hrnet_fast", "memory", "--model", "w18_small_v1-pose", "--size",
                        "64x64", "--batch", "2", "--rounds", "1", "--variants", "eager,lean", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    text = summarize.summarize(str(tmp_path))
    section = text.split("## Training memory (hrnet-fast memory)")[1]
    assert "w18_small_v1-pose 2x3x64x64" in section and "| lean |" in section, section
    assert "No training-memory results" in summarize.summarize(str(tmp_path / "none"))
