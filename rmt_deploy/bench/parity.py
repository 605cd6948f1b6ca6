"""Numerical agreement between an artifact's logits and the PyTorch FP32 reference."""
from __future__ import annotations

import numpy as np

__all__ = ["compare_logits", "compare_features"]


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


def compare_features(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict:
    """Per-output agreement of feature maps (each image's map flattened), and the worst of them.

    ``reference`` and ``candidate`` map output names to (N, C, H, W) arrays. The top-level
    ``max_abs`` and ``cosine`` are the worst over outputs and images, so one threshold table
    judges every output; ``outputs`` holds each output's own figures.
    """
    missing = [name for name in reference if name not in candidate]
    if missing:
        raise ValueError(f"the artifact has no output {missing[0]} (it has {', '.join(candidate)})")
    outputs = {}
    for name, ref in reference.items():
        cand = candidate[name]
        if ref.shape != cand.shape:
            raise ValueError(f"{name}: shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
        entry = compare_logits(ref.reshape(len(ref), -1), cand.reshape(len(cand), -1))
        del entry["top1_agreement"]
        entry["scale"] = entry.pop("logit_scale")
        entry["mean_cosine"] = _mean_cosine(ref, cand)
        outputs[name] = entry
    return {
        "max_abs": max(o["max_abs"] for o in outputs.values()),
        "mean_abs": float(np.mean([o["mean_abs"] for o in outputs.values()])),
        "cosine": min(o["cosine"] for o in outputs.values()),
        "samples": next(iter(outputs.values()))["samples"],
        "worst_output": min(outputs, key=lambda k: outputs[k]["cosine"]),
        "outputs": outputs,
    }


def _mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-30)
    return float(np.mean(np.sum(ref * cand, axis=1) / norms))
