"""compare.png: per-tap error against depth, one line per compared artifact."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path

__all__ = ["write_taps_plot"]


def write_taps_plot(path: Path, results: list) -> Path | None:
    """Worst-image relative L2 error at each tap (log scale), first divergence marked; None
    (nothing written) when no artifact has a tap."""
    results = [r for r in results if r.taps]
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = max((r.taps for r in results), key=len)
    order = {t.name: i for i, t in enumerate(names)}
    fig, ax = plt.subplots(figsize=(max(7.0, 0.22 * len(order)), 4.4), dpi=110)
    for r in results:
        xs = [order[t.name] for t in r.taps if t.name in order]
        ys = [t.rel_l2 if t.rel_l2 is not None else float("nan") for t in r.taps if t.name in order]
        (line,) = ax.plot(xs, [max(y, 1e-9) for y in ys], marker=".", label=f"{Path(r.path).name} ({r.runtime})")
        if r.first_divergence in order:
            i = order[r.first_divergence]
            ax.axvline(i, color=line.get_color(), alpha=0.35, linestyle="--")
        bad = [order[t.name] for t in r.taps if t.nonfinite and t.name in order]
        if bad:
            ax.scatter(bad, [1.0] * len(bad), marker="x", color="red", zorder=3, label="non-finite values")
    ax.set_yscale("log")
    ax.set_xticks(range(len(order)), [n.replace("stages.", "s").replace("blocks.", "b") for n in order],
                  rotation=90, fontsize=6)
    ax.set_ylabel("relative L2 error, worst image")
    ax.set_xlabel("tap (depth); dashed: first divergence")
    ax.set_title(f"where the artifact departs from PyTorch ({results[0].level} level)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
