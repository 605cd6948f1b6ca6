"""Accuracy-aware INT8: revert the most sensitive layers to float until a budget holds — a top-1
drop on a labelled set (``--max-drop``) or a worst-image cosine on every output (``--min-cosine``).

Sensitivity of a layer = how much closer the outputs get to FP32 (mean squared error on a
small ranking set) when that layer alone runs in float. Layers are then reverted in that
order, 1, 2, 4, … at a time, each step scored by the budget's measure (``jobs.budget``), until
it holds.

The search is the same for every backend; a ``Reverter`` says how one backend's INT8 graph
lists and reverts its quantized layers (ONNX Q/DQ here, OpenVINO FakeQuantize in
``openvino_int8``).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import encode

__all__ = ["BudgetResult", "Reverter", "ONNX_QDQ", "rank_layers", "fit_budget"]


@dataclass(frozen=True)
class Reverter:
    """One backend's INT8 graph operations used by the search."""

    layers: Callable[[object], list[str]]  # quantized layer names, in graph order
    revert: Callable[[object, list[str], object], list[str]]  # (model, names, float original), in place
    clone: Callable[[object], object]


ONNX_QDQ = Reverter(encode.quantized_layers, encode.revert, copy.deepcopy)


@dataclass
class BudgetResult:
    model: object  # the best model found (the one that fits, else the lowest drop)
    drop: float
    fits: bool
    reverted: list[str] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)  # [{"layer", "mse_if_float"}], most sensitive first
    steps: list[dict] = field(default_factory=list)  # [{"reverted": k, "drop": d}]


def rank_layers(model, original, logits_of: Callable[[object], np.ndarray], reference: np.ndarray,
                advance: Callable[[int], None] = lambda n=1: None, reverter: Reverter = ONNX_QDQ) -> list[dict]:
    """Layers of ``model`` by sensitivity, most sensitive first.

    ``original`` is the FP32 graph that was calibrated; ``logits_of(model)`` runs a candidate
    on the ranking images; ``reference`` are the FP32 logits of the same images.
    """
    scores = []
    for name in reverter.layers(model):
        candidate = reverter.clone(model)
        reverter.revert(candidate, [name], original)
        err = float(np.mean((logits_of(candidate).astype(np.float64) - reference) ** 2))
        scores.append({"layer": name, "mse_if_float": err})
        advance(1)
    return sorted(scores, key=lambda s: s["mse_if_float"])


def fit_budget(model, original, drop_of: Callable[[object], float], ranking: list[dict], max_drop: float,
               initial_drop: float, log: Callable[[str], None] = lambda m: None,
               reverter: Reverter = ONNX_QDQ, describe: Callable[[float], str] = lambda d: f"top-1 drop {d:.2f}"
               ) -> BudgetResult:
    """Revert layers in ``ranking`` order until ``drop_of(model) <= max_drop``.

    ``drop_of`` scores a candidate (top-1 points vs FP32 on the evaluation set, or any loss
    where lower is better, e.g. 1 - worst feature cosine); ``describe`` words a loss for the log.
    """
    best = BudgetResult(model, initial_drop, initial_drop <= max_drop)
    if best.fits:
        return best
    order = [r["layer"] for r in ranking]
    k = 1
    while True:
        k = min(k, len(order))
        candidate = reverter.clone(model)
        reverted = reverter.revert(candidate, order[:k], original)
        drop = drop_of(candidate)
        best.steps.append({"reverted": k, "drop": drop})
        log(f"accuracy-aware: {k} layer(s) in float → {describe(drop)} (budget: {describe(max_drop)})")
        if drop < best.drop or drop <= max_drop:
            best.model, best.drop, best.reverted = candidate, drop, reverted
        if drop <= max_drop:
            best.fits = True
            break
        if k == len(order):
            break
        k *= 2
    best.ranking = ranking
    return best
