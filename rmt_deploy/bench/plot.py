"""plot.png for a report: accuracy against latency, closeness to PyTorch, latency by batch size.

The second panel is there for the report a new user sees first (one or two artifacts, no bench
run yet): how far each artifact is from PyTorch FP32, against the limit its precision must meet.
The batch panel appears once ``rmt-deploy bench`` has timed more than one batch size; the closeness
panel only when some artifact was compared (``bench --no-reference`` compares none).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["write_plot", "figure", "PLOT_PNG"]

PLOT_PNG = "plot.png"
_FLOOR = 1e-9  # 1 − cosine of an FP32 artifact can be exactly 0 on a log axis
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _label(entry: dict) -> str:
    return f"{entry['target']}/{entry['precision']}"


def write_plot(path: Path, report: dict) -> Path | None:
    """Write the PNG to ``path``; None (nothing written) when no artifact was timed or compared."""
    fig = figure(report)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def figure(report: dict):
    """The matplotlib figure of ``report`` (one panel per view that has data), or None."""
    timed = [a for a in report["artifacts"] + report.get("reference_runs", []) if a.get("latency_ms")]
    compared = [a for a in report["artifacts"] if (a.get("parity") or {}).get("cosine") is not None]
    if not timed and not compared:
        return None
    batched = [a for a in timed if len(_by_batch_runs(a, report)) > 1]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(_label(a) for a in timed + compared))
    color = {n: _COLORS[i % len(_COLORS)] for i, n in enumerate(names)}
    # A bench run without the reference compares nothing: no empty closeness panel then.
    drawers = ([(_accuracy_vs_latency, timed)] + ([(_closeness, compared)] if compared else [])
               + ([(_by_batch, batched)] if batched else []))
    fig, axes = plt.subplots(1, len(drawers), figsize=(5.2 * len(drawers), 4.0), dpi=110, squeeze=False)
    for ax, (draw, rows) in zip(axes[0], drawers):
        draw(ax, rows, color, report)
    model = report.get("model") or {}
    fig.suptitle(f"{model.get('variant', '?')} @ {'x'.join(map(str, model.get('input_size', [])))}", fontsize=10)
    fig.tight_layout()
    return fig


def _accuracy_vs_latency(ax, rows: list[dict], color: dict, report: dict) -> None:
    """Top-1 against p50 latency; without labels, latency bars. The top-1 axis never passes 100 %."""
    scored = [a for a in rows if (a.get("accuracy") or {}).get("top1") is not None]
    if not rows:
        _note(ax, "no latency measured here\n(e.g. Core ML off macOS)")
        return
    if not scored:
        ax.barh([_label(a) for a in rows], [a["latency_ms"]["p50"] for a in rows],
                color=[color[_label(a)] for a in rows])
        ax.invert_yaxis()
        ax.set_xlabel("p50 latency, batch 1 (ms)")
        ax.set_title("latency (no evaluation set)")
        return
    for a in scored:
        ax.scatter(a["latency_ms"]["p50"], a["accuracy"]["top1"], s=50, color=color[_label(a)], label=_label(a),
                   clip_on=False, zorder=3)
    fp32 = next((a["accuracy"].get("top1_fp32") for a in scored if a["accuracy"].get("top1_fp32") is not None), None)
    tops = [a["accuracy"]["top1"] for a in scored] + ([fp32] if fp32 is not None else [])
    if fp32 is not None:
        ax.axhline(fp32, color="0.4", linestyle="--", linewidth=1, label="PyTorch FP32 top-1")
    low = min(tops)
    span = max(max(tops) - low, 1.0)
    bottom, top = max(0.0, low - 0.5 * span), max(tops) + 0.08 * span
    ax.set_ylim(bottom, top)
    ax.set_yticks([t for t in ax.get_yticks() if bottom <= t <= 100.0])  # no tick above 100 %
    ax.set_xlim(0, 1.1 * max(a["latency_ms"]["p50"] for a in scored))  # room for the slowest dot
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def _closeness(ax, rows: list[dict], color: dict, report: dict) -> None:
    """1 − worst-image cosine against PyTorch FP32 per artifact (log scale), with each precision's limit."""
    gaps = [1.0 - a["parity"]["cosine"] for a in rows]
    names = [_label(a) for a in rows]
    ax.barh(names, [max(g, _FLOOR) for g in gaps], height=0.5, color=[color[n] for n in names])
    for y, (a, gap) in enumerate(zip(rows, gaps)):
        text = f"{gap:.1e}" if gap >= _FLOOR else f"< {_FLOOR:.0e}"
        if a["parity"].get("max_abs") is not None:
            text += f"  (max abs {a['parity']['max_abs']:.1e})"
        ax.text(max(gap, _FLOOR) * 1.5, y, text, va="center", fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xscale("log")
    for precision, limit in _limits(rows, report).items():
        ax.axvline(1.0 - limit, color="0.3", linestyle=":", linewidth=1)
        ax.text(1.0 - limit, -0.6, f" {precision} limit", fontsize=7, color="0.3", va="top")
    ax.set_xlim(_FLOOR / 2, 1.0)
    ax.set_xlabel("1 − worst-image cosine vs PyTorch FP32 (lower is closer)")
    ax.set_title("closeness to PyTorch")
    ax.grid(alpha=0.3, axis="x")


def _limits(rows: list[dict], report: dict) -> dict[str, float]:
    """The cosine limits the export verified against (recorded in the report), for the precisions shown."""
    recorded = (report.get("verification") or {}).get("min_cosine") or {}
    shown = {a["precision"] for a in rows}
    return {p: v for p, v in recorded.items() if p in shown}


def _by_batch_runs(artifact: dict, report: dict) -> list[dict]:
    """The timed cells at the verified input size (``bench --size`` may add others)."""
    size = list((report.get("model") or {}).get("input_size") or [])
    return [b for b in artifact.get("benchmarks", []) if b.get("latency_ms") and b.get("size", size) == size]


def _by_batch(ax, rows: list[dict], color: dict, report: dict) -> None:
    batches: set[int] = set()
    for a in rows:
        runs = _by_batch_runs(a, report)
        batches.update(b["batch"] for b in runs)
        ax.plot([b["batch"] for b in runs], [b["latency_ms"]["p50"] for b in runs], marker="o",
                color=color.get(_label(a)), label=_label(a))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("latency by batch size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _note(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
