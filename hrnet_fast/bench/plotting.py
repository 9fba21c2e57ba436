"""The bar chart of a run (matplotlib, Agg backend): PNG, PDF or SVG, by
the file's suffix."""
from __future__ import annotations

import os
from typing import Any, Dict, Sequence

#: The formats `plot` writes, by file suffix.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def check_path(path: str) -> str:
    """The format `path`'s suffix names ("png", "pdf" or "svg").

    Raises:
        ValueError: for any other suffix, naming the ones it takes.

    Example:
        >>> check_path("out/latency.pdf")
        'pdf'
    """
    fmt = FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(f"--plot {path}: expected a file ending in {', '.join(FORMATS)} (the chart's format)")
    return fmt


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(reports: Sequence[Dict[str, Any]], path: str) -> None:
    """Median latency per variant (bars, p10-p90 whiskers, speedup against
    eager written above each bar), one panel per case, saved in the format
    `path`'s suffix names (check_path).

    Raises:
        ImportError: when matplotlib is not installed.
        ValueError: for a suffix other than .png, .pdf or .svg.
    """
    fmt = check_path(path)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(max(5.0, 4.5 * len(reports)), 4.2), squeeze=False)
    for ax, rep in zip(axes[0], reports):
        res = rep["results"]
        names = [r["variant"] for r in res]
        med = [r["median_ms"] for r in res]
        lo = [r["median_ms"] - r["p10_ms"] for r in res]
        hi = [r["p90_ms"] - r["median_ms"] for r in res]
        colors = ["#7f7f7f" if n == "eager" else "#1f77b4" if n.startswith("fused") else "#ff7f0e" for n in names]
        bars = ax.bar(names, med, yerr=[lo, hi], capsize=4, color=colors)
        for bar, r in zip(bars, res):
            top = max(bar.get_height(), r["p90_ms"])  # above the whisker
            ax.annotate(f"{r.get('speedup_vs_eager', 1.0):.2f}x", (bar.get_x() + bar.get_width() / 2, top),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=9)
        n, c, h, w = rep["input"]
        name = rep["model"] + (f"-{rep['head']}" if rep.get("head") else "")
        mode = "train step" if rep["train"] else "inference"
        ax.set_title(f"{name} {n}x{c}x{h}x{w} {rep['dtype']} {mode}\n{rep.get('device_name', rep['device'])}",
                     fontsize=9)
        ax.set_ylabel("median latency, ms (p10-p90)")
        ax.tick_params(axis="x", labelrotation=20)
        ax.margins(y=0.15)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format=fmt, dpi=110)
    plt.close(fig)
