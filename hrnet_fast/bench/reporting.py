"""The terminal table (rich, or plain text without it) and the JSON file.

JSON layout (read by tools outside this repository; extra keys only inside
the result entries):

    {"device": str, "torch": str, "model": str, "input": [N, C, H, W],
     "dtype": str, "train": bool,
     "results": [{"variant": str, "median_ms": float, "p10_ms": float,
                  "p90_ms": float, "peak_mem_mb": float | null,
                  "rel_err_vs_eager": float, "speedup_vs_eager": float,
                  "throughput_img_s": float, "compile_s": float | null,
                  "setup_s": float (build + first call: the compile, or
                  optimize's folding and prepacking),
                  "run": {device_name, timer, rounds, peak_mem_method,
                          errors (failed variants), ...}, ...}, ...]}

Only variants that ran are in "results"; failed ones are in run.errors.
With several cases in one run (the CUDA default) the file holds the first
case in that layout plus "cases": every case in the same layout.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, TextIO

COLUMNS = ("variant", "median ms", "p10 ms", "p90 ms", "img/s", "speedup", "paired", "peak MB", "rel err",
           "setup s")


def _fmt(value: Optional[float], spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return format(value, spec)


def _times(value: Optional[float]) -> str:
    text = _fmt(value, ".2f")
    return text if text == "-" else text + "x"


def rows(report: Dict[str, Any]) -> List[List[str]]:
    """Table cells of one case, one row per variant (failed ones included)."""
    out = []
    for r in report["results"]:
        out.append([r["variant"], _fmt(r["median_ms"], ".2f"), _fmt(r["p10_ms"], ".2f"), _fmt(r["p90_ms"], ".2f"),
                    _fmt(r.get("throughput_img_s"), ".1f"), _times(r.get("speedup_vs_eager")),
                    _times(r.get("speedup_paired")),
                    _fmt(r["peak_mem_mb"], ".1f"), _fmt(r["rel_err_vs_eager"], ".1e"),
                    _fmt(r.get("setup_s", r.get("compile_s")), ".1f")])
    for e in report.get("errors", []):
        out.append([e["variant"], "failed"] + ["-"] * (len(COLUMNS) - 2))
    return out


def title(report: Dict[str, Any]) -> str:
    """One line naming the case, the device and the run."""
    n, c, h, w = report["input"]
    name = report["model"] + (f" ({report['head']})" if report.get("head") else "")
    mode = "train step" if report["train"] else "inference"
    layout = ", channels_last" if report.get("channels_last") else ""
    return (f"{name} {n}x{c}x{h}x{w} {report['dtype']}{layout} {mode} on {report['device']} "
            f"[{report.get('device_name', '')}], torch {report['torch']}, {report.get('rounds', '?')} paired rounds")


def failures(report: Dict[str, Any]) -> List[str]:
    """One line per failed variant, with its error."""
    return [f"{e['variant']} failed: {e['error']}" for e in report.get("errors", [])]


def footnote(report: Dict[str, Any]) -> str:
    """How the columns were measured."""
    timer = "CUDA events" if report.get("timer") == "cuda_events" else "host clock (perf_counter)"
    return (f"latency: {timer}, per call, after warm-up; speedup = eager median / variant median; "
            f"paired = median over rounds of eager / variant (calls moments apart); "
            f"peak MB: {report.get('peak_mem_method')}; rel err: ||out - eager|| / ||eager||"
            + ("" if not report["train"] else " on the first training step"))


def markdown_table(report: Dict[str, Any]) -> str:
    """The table of one case as GitHub markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows(report)]
    return "\n".join(lines)


def plain_table(report: Dict[str, Any]) -> str:
    """The table of one case as aligned plain text."""
    body = [list(COLUMNS)] + rows(report)
    widths = [max(len(r[i]) for r in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in body]
    return "\n".join([title(report)] + lines + [footnote(report)] + failures(report))


def print_report(report: Dict[str, Any], stream: Optional[TextIO] = None) -> None:
    """Print one case's table: rich when installed, plain text otherwise."""
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(plain_table(report), file=stream, flush=True)
        return
    table = Table(title=escape(title(report)), caption=escape(footnote(report)), title_justify="left")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows(report):
        # Variant names like "fused[triton]" would otherwise read as markup tags.
        table.add_row(*(escape(cell) for cell in row), style="red" if row[1] == "failed" else None)
    console = Console(file=stream, width=max(120, Console(file=stream).width))
    console.print(table)
    for line in failures(report):
        console.print(line, style="red", markup=False, highlight=False)


LAYOUT_KEYS = ("device", "torch", "model", "input", "dtype", "train", "results")


def to_layout(report: Dict[str, Any]) -> Dict[str, Any]:
    """One case in the published layout: exactly LAYOUT_KEYS at the top;
    everything else about the run (device name, timer, rounds, failed
    variants, ...) rides along in each result as the extra key "run"."""
    run = {k: v for k, v in report.items() if k not in LAYOUT_KEYS}
    doc = {k: report[k] for k in LAYOUT_KEYS}
    doc["results"] = [{**r, "run": run} for r in report["results"]]
    return doc


def from_layout(doc: Dict[str, Any]) -> Dict[str, Any]:
    """The inverse of `to_layout` (a report as the runner returns it)."""
    results = [{k: v for k, v in r.items() if k != "run"} for r in doc.get("results", [])]
    run = doc["results"][0].get("run", {}) if doc.get("results") else {}
    return {**{k: doc[k] for k in LAYOUT_KEYS if k in doc}, **run, "results": results}


def load_reports(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every case of a JSON document written by `write_json`."""
    return [from_layout(d) for d in doc.get("cases", [doc])]


def document(reports: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON document of a run: the first case in the published layout;
    a run of several cases adds "cases", every case in that layout."""
    first = to_layout(reports[0])
    if len(reports) == 1:
        return first
    return {**first, "cases": [to_layout(r) for r in reports]}


def write_json(reports: Sequence[Dict[str, Any]], path: str) -> None:
    """Write the run's JSON document to `path` (directories created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(document(reports), f, indent=2, allow_nan=True)
        f.write("\n")
