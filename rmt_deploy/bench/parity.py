"""Numerical agreement between an artifact's logits and the PyTorch FP32 reference."""
from __future__ import annotations

import numpy as np

__all__ = ["compare_logits"]


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max/mean absolute difference, worst per-sample cosine and top-1 agreement.

    Both arrays are (N, classes). Cosine is computed in float64.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs candidate {candidate.shape}")
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    diff = np.abs(ref - cand)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-30)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "cosine": float(cosine.min()),
        "top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "samples": int(ref.shape[0]),
        "logit_scale": float(np.abs(ref).max()),
    }
