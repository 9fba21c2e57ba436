"""Write summary.md for a gpu_check.sh report directory.

    python benchmarks/summarize.py REPORT_DIR

Reads what the steps left there (any may be missing: a failed or timed-out
step leaves a gap, which the summary names):
    steps.tsv          step, status, seconds (written by gpu_check.sh)
    build_info.json    hrnet_fast.build_info()
    bandwidth.json     benchmarks/bandwidth.py
    bench_*.json       hrnet-fast bench --json
    exchange_gpu.json  benchmarks/exchange_gpu.py --json
    memory_*.json      hrnet-fast memory --json
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _load(path: str) -> Optional[Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _find(report_dir: str, name: str) -> str:
    """`name` in the report directory or its aux/ folder."""
    aux = os.path.join(report_dir, "aux", name)
    return aux if os.path.exists(aux) else os.path.join(report_dir, name)


def _steps(report_dir: str) -> List[List[str]]:
    try:
        with open(_find(report_dir, "steps.tsv")) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()][1:]
    except OSError:
        return []


def _cell(r: Optional[Dict[str, Any]]) -> str:
    if r is None:
        return "-"
    if r.get("error"):
        return "error"
    parts = []
    if r.get("kernel_us") is not None:
        parts.append(f"{r['kernel_us']:.1f} us / {r['kernels']:.0f} k")
    if r.get("of_copy") is not None:
        parts.append(f"{100 * r['of_copy']:.0f}% bw")
    if r.get("graph_us") is not None:
        parts.append(f"graph {r['graph_us']:.1f}")
    if r.get("host_us") is not None:
        parts.append(f"host {r['host_us']:.1f}")
    return "; ".join(parts) or "-"


def exchange_section(doc: Optional[Dict[str, Any]]) -> List[str]:
    """The op tables (issue 14) and the rows with conv terms (issue 16) of
    benchmarks/exchange_gpu.py."""
    if not doc:
        return ["No exchange results (step failed, was skipped or timed out)."]
    out = [f"{doc['device']}, torch {doc['torch']}, {doc['dtype']}, channels_last; copy bandwidth "
           f"{doc.get('copy_gbps') or 0:.0f} GB/s; matmul peak {doc.get('matmul_tflops') or 0:.0f} TFLOP/s. "
           f"Cells: kernel time per call from the profiler / kernels per call; % of copy bandwidth for the bytes "
           f"the op must move; CUDA-graph replay us; host us per call (200 calls, no sync).", ""]
    ops = doc.get("ops") or []
    variants = [v for v in ("eager", "compile", "cuda", "triton") if any(r["variant"] == v for r in ops)]
    if ops:
        out += ["| case | mode | dir | MB | " + " | ".join(variants) + " | cuda vs eager | cuda vs compile | "
                "triton vs cuda |", "|" + "---|" * (4 + len(variants) + 3)]
        keys = []
        for r in ops:
            k = (r["case"], r["mode"], r["direction"])
            if k not in keys:
                keys.append(k)
        for k in keys:
            per = {r["variant"]: r for r in ops if (r["case"], r["mode"], r["direction"]) == k}
            mb = next(iter(per.values()))["bytes"] / 1e6

            def ratio(a: str, b: str) -> str:
                x, y = per.get(a, {}).get("kernel_us"), per.get(b, {}).get("kernel_us")
                return f"{x / y:.2f}x" if x and y else "-"
            out.append(f"| {k[0]} | {k[1]} | {k[2][:3]} | {mb:.1f} | " + " | ".join(_cell(per.get(v)) for v in variants)
                       + f" | {ratio('eager', 'cuda')} | {ratio('compile', 'cuda')} | {ratio('cuda', 'triton')} |")
        errors = [f"{r['case']} {r['mode']} {r['direction']} {r['variant']}: {r['error']}" for r in ops
                  if r.get("error")]
        out += [""] + [f"- {e}" for e in errors]
    rows = doc.get("rows") or []
    if rows:
        out += ["", "Stage-4 rows with conv terms (tail = last chain convs + exchange; row = the whole row):", "",
                "| row | variant | cell | TFLOP/s | rel. err vs eager |", "|---|---|---|---|---|"]
        for r in rows:
            tf = f"{r['tflops']:.0f}" if r.get("tflops") else "-"
            err = f"{r['rel_err_vs_eager']:.1e}" if r.get("rel_err_vs_eager") is not None else "-"
            out.append(f"| {r['row']} | {r['variant']} | {_cell(r)} | {tf} | {err} |")
    return out


def summarize(report_dir: str) -> str:
    """The summary markdown of `report_dir`."""
    from hrnet_fast.bench import reporting

    out = [f"# gpu_check report: {os.path.basename(os.path.abspath(report_dir))}", ""]
    steps = _steps(report_dir)
    failed = [s for s in steps if len(s) > 1 and s[1] != "ok" and not s[1].startswith("skipped")
              and not s[1].startswith("incomplete (optional")]
    out.append(f"**Result: {'FAILED at step ' + failed[0][0] + ' (' + failed[0][1] + ')' if failed else 'all steps ok'}**")
    out += ["", "| step | status | seconds |", "|---|---|---|"]
    out += [f"| {' | '.join((s + ['', ''])[:3])} |" for s in steps]
    info = _load(_find(report_dir, "build_info.json"))
    out += ["", f"build_info: `{json.dumps(info)}`" if info else "build_info: missing"]
    bw = _load(_find(report_dir, "bandwidth.json"))
    copy_gbps = bw.get("gbps_read_plus_write") if bw else None
    out += ["", "## Copy bandwidth", ""]
    out.append(f"{bw['device_name']}: device-to-device copy of {bw['bytes_per_copy'] / 2**30:g} GiB, median "
               f"{bw['median_ms']:.3f} ms = **{copy_gbps:.0f} GB/s** read+write" if bw else "missing")
    out += ["", "## hrnet-fast bench", ""]
    benches = sorted(glob.glob(os.path.join(report_dir, "bench_*.json"))) + \
        sorted(glob.glob(os.path.join(report_dir, "aux", "bench_*.json")))
    if not benches:
        out.append("No model benchmark results (step failed or timed out).")
    for path in benches:
        doc = _load(path)
        if not doc:
            out += [f"{os.path.basename(path)}: unreadable", ""]
            continue
        for rep in reporting.load_reports(doc):
            out += [f"### {reporting.title(rep)}", "", reporting.markdown_table(rep), "",
                    reporting.footnote(rep) + "; bandwidth fraction: not defined for whole models", ""]
            out += [f"- {line}" for line in reporting.failures(rep)]
    out += ["", "## The exchange op and the rows with conv terms", ""]
    out += exchange_section(_load(_find(report_dir, "exchange_gpu.json")))
    out += ["", "## Training memory (hrnet-fast memory)", ""]
    out += memory_section(sorted(glob.glob(os.path.join(report_dir, "memory_*.json")))
                          + sorted(glob.glob(os.path.join(report_dir, "aux", "memory_*.json"))))
    return "\n".join(out) + "\n"


def memory_section(paths: List[str]) -> List[str]:
    """Each `hrnet-fast memory --json` report as its table."""
    from hrnet_fast.bench.training_memory import table

    if not paths:
        return ["No training-memory results (step failed, was skipped or timed out)."]
    out: List[str] = []
    for path in paths:
        doc = _load(path)
        out += [table(doc) if doc else f"{os.path.basename(path)}: unreadable", ""]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    text = summarize(argv[0])
    with open(os.path.join(argv[0], "summary.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
