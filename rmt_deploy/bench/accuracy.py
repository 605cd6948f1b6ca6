"""Top-k accuracy of logits against integer labels."""
from __future__ import annotations

import numpy as np

__all__ = ["topk_accuracy"]


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Percentages, e.g. ``{"top1": 97.5, "top5": 100.0}``; k larger than the class count is capped."""
    labels = np.asarray(labels)
    order = np.argsort(-logits, axis=1)
    out = {}
    for k in ks:
        kk = min(k, logits.shape[1])
        hit = (order[:, :kk] == labels[:, None]).any(axis=1)
        out[f"top{k}"] = round(float(hit.mean() * 100.0), 3)
    return out
