"""plot.png for a report: accuracy vs latency per artifact, and latency by batch size."""
from __future__ import annotations

from pathlib import Path

__all__ = ["write_plot", "PLOT_PNG"]

PLOT_PNG = "plot.png"


def _label(entry: dict) -> str:
    return f"{entry['target']}/{entry['precision']}"


def write_plot(path: Path, report: dict) -> Path | None:
    """Write the PNG to ``path``; None (nothing written) when no artifact has a latency."""
    rows = [a for a in report["artifacts"] + report.get("reference_runs", []) if a.get("latency_ms")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for a in rows:
        lat, acc = a["latency_ms"]["p50"], (a.get("accuracy") or {}).get("top1")
        if acc is not None:
            left.scatter(lat, acc, s=40)
            left.annotate(_label(a), (lat, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if left.collections:
        left.set_xlabel("p50 latency, batch 1 (ms)")
        left.set_ylabel("top-1 (%)")
        left.set_title("accuracy vs latency")
        left.grid(alpha=0.3)
    else:
        names = [_label(a) for a in rows]
        left.barh(names, [a["latency_ms"]["p50"] for a in rows])
        left.set_xlabel("p50 latency, batch 1 (ms)")
        left.set_title("latency (no evaluation set)")
    plotted, batches = False, set()
    for a in rows:
        runs = [b for b in a.get("benchmarks", []) if b.get("latency_ms")]
        batches.update(b["batch"] for b in runs)
        if runs:
            right.plot([b["batch"] for b in runs], [b["latency_ms"]["p50"] for b in runs], marker="o",
                       label=_label(a))
            plotted = True
    if plotted:
        right.set_xscale("log", base=2)
        right.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])
        right.set_xlabel("batch size")
        right.set_ylabel("p50 latency (ms)")
        right.set_title("latency by batch size")
        right.legend(fontsize=8)
        right.grid(alpha=0.3)
    else:
        right.axis("off")
        right.text(0.5, 0.5, "run `rmt-deploy bench --batch 1,8,32`\nfor latency by batch size",
                   ha="center", va="center", fontsize=9)
    model = report.get("model") or {}
    fig.suptitle(f"{model.get('variant', '?')} @ {'x'.join(map(str, model.get('input_size', [])))}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
