"""Write summary.md for a gpu_check.sh report directory.

    python benchmarks/summarize.py REPORT_DIR

Reads what the steps left there (any may be missing: a failed or timed-out
step leaves a gap, which the summary names):
    steps.tsv          step, status, seconds (written by gpu_check.sh)
    build_info.json    hrnet_fast.build_info()
    bandwidth.json     benchmarks/bandwidth.py
    microbench.jsonl   one line per microbenchmark (benchmarks/test_exchange_bench.py)
    bench_*.json       hrnet-fast bench --json
    onepass.json       benchmarks/onepass_gpu.py --json
"""
from __future__ import annotations

import glob
import json
import os
import sys
from collections import defaultdict
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


def microbench_section(lines: List[Dict[str, Any]], copy_gbps: Optional[float]) -> List[str]:
    """Markdown tables of the microbenchmarks, one row per case and
    direction, one column group per backend."""
    if not lines:
        return ["No microbenchmark results (step failed, was skipped or timed out)."]
    by_key: Dict[tuple, Dict[str, Dict[str, Any]]] = defaultdict(dict)
    for r in lines:
        by_key[(r["case"], r["direction"])][r["backend"]] = r
    backends = [b for b in ("reference", "compile", "triton", "cuda", "cpu") if any(b in v for v in by_key.values())]
    first = lines[0]
    out = [f"dtype {first['dtype']}, channels_last {first['channels_last']}; time = device-side median "
           f"(triton do_bench, L2 flushed) on CUDA; GB/s from the bytes the op must move (forward: read every "
           f"input, write the output; backward: read grad, output and inputs, write input grads); "
           f"'graph': the forward replayed from a CUDA graph, the kernels' time without launch costs "
           f"(L2 not flushed between replays)"
           + (f"; % = fraction of the measured copy bandwidth {copy_gbps:.0f} GB/s" if copy_gbps else "") + ".", ""]
    head = ["case", "dir", "MB"]
    for b in backends:
        head += [f"{b} us", f"{b} GB/s" + (" (%)" if copy_gbps else "")]
        if b != "reference":
            head.append(f"{b} vs ref")
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (case, direction), per in by_key.items():
        any_r = next(iter(per.values()))
        row = [case, "fwd" if direction == "forward" else "bwd", f"{any_r['bytes'] / 1e6:.1f}"]
        ref = per.get("reference")
        for b in backends:
            r = per.get(b)
            if r is None or r.get("device_ms") is None:
                row += ["-", "-"] + ([] if b == "reference" else ["-"])
                continue
            gbps, graph = r["gbps"], r.get("graph_gbps")
            frac = f" ({100 * gbps / copy_gbps:.0f}%)" if copy_gbps else ""
            cell = f"{gbps:.3g}{frac}"
            if graph:
                cell += f"; graph {graph:.3g}" + (f" ({100 * graph / copy_gbps:.0f}%)" if copy_gbps else "")
            row += [f"{r['device_ms'] * 1e3:.1f}", cell]
            if b != "reference":
                ok = ref is not None and ref.get("device_ms")
                row.append(f"{ref['device_ms'] / r['device_ms']:.2f}x" if ok else "-")
        out.append("| " + " | ".join(row) + " |")
    bad = [f"{r['case']} {r['backend']} {r['direction']}: {r['rel_err_vs_reference']:.1e}" for r in lines
           if r.get("rel_err_vs_reference") is not None and r["rel_err_vs_reference"] > 2e-2]
    out += ["", "Relative error against the reference above 2e-2: " + ("; ".join(bad) if bad else "none") + "."]
    return out


def onepass_section(doc: Optional[Dict[str, Any]]) -> List[str]:
    """One table per output branch of benchmarks/onepass_gpu.py."""
    if not doc or not doc.get("branches"):
        return ["No one-pass results (step failed, was skipped or timed out)."]
    a, caps = doc["args"], doc.get("ceilings") or {}
    out = [f"{doc['device']}, {a['arch']} stage 4 at {a['size']} input, batch {a['batch']}, {a['dtype']}, "
           f"{'NCHW' if a['nchw'] else 'channels_last'}, compile mode {a['compile_mode']}, "
           f"cudnn.benchmark {not a.get('no_cudnn_benchmark', True)}"
           + (f"; ceilings: copy {caps['copy_gbps']:.0f} GB/s, matmul {caps['matmul_tflops']:.0f} TFLOP/s"
              if caps else "") + ".", ""]
    for b in doc["branches"]:
        out += [f"Output branch {b['branch']} ({b['channels']} ch, {b['out_hw'][0]}x{b['out_hw'][1]}), "
                f"{b['rounds']} rounds" + (f", compile took {b['compile_s']:.0f} s" if b.get("compile_s") else "")
                + ":", "", "| variant | us | vs eager | vs compile | rel. err vs fp32 | kernel work |",
                "|---|---|---|---|---|---|"]
        for name, ms in b["median_ms"].items():
            work = ""
            if name.startswith("kernel-"):
                w = b["kernel_work"][name[len("kernel-"):]]
                work = (f"graph replay {w['graph_ms'] * 1e3:.1f} us, " if w.get("graph_ms") else "") + \
                    f"{w['bytes'] / 1e6:.1f} MB, {w['flops'] / 1e9:.1f} GFLOP, {w['conv_terms']} conv terms on " \
                       f"{w['resolved']}" + (f", {100 * w['fraction_of_bound']:.0f}% of bound"
                                             if "fraction_of_bound" in w else "")
            vs_e, vs_c = b["speedup_vs_eager"].get(name), b.get("speedup_vs_compile", {}).get(name)
            err = b["rel_err_vs_fp32"].get(name)
            out.append(f"| {name} | {ms * 1e3:.1f} | {f'{vs_e:.2f}x' if vs_e else '-'} | "
                       f"{f'{vs_c:.2f}x' if vs_c else '-'} | {f'{err:.1e}' if err is not None else '-'} | {work} |")
        out += [f"- {k}: {v}" for k, v in b.get("errors", {}).items()] + [""]
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
    out += ["", "## One-pass exchange rows (conv terms in the kernel)", ""]
    out += onepass_section(_load(os.path.join(report_dir, "onepass.json")))
    out += ["", "## Exchange microbenchmarks", ""]
    lines = []
    try:
        with open(os.path.join(report_dir, "microbench.jsonl")) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pass
    out += microbench_section(lines, copy_gbps)
    return "\n".join(out) + "\n"


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
