"""Accuracy-aware INT8: revert the most sensitive layers to float until a budget holds, on targets
whose int8 layers can be reverted one at a time; gate the others.

Two budgets, one search (``quant.accuracy_aware``):
- ``--max-drop`` (classifiers, labelled ``--eval``): top-1 points vs FP32 on the evaluation set;
- ``--min-cosine`` (any model, no labels; what backbones use): the worst per-image cosine of every
  output (each feature map, or the logits) vs PyTorch FP32 on the verification images, at every
  verified size of a ``--dynamic`` artifact.

Layers are ranked by how far their int8 moves the outputs at every verified size: an int8 layer can
cost little at the calibration size and much at another (the demo's second stem conv in OpenVINO:
cosine 0.998 at 64x64, 0.953 at 32x128).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import artifact_bytes, remove_artifact
from ..bench.evaluate import accuracy_entry
from ..bench.schema import Artifact
from ..targets import Target
from .sources import ExportSources

__all__ = ["fit_or_gate", "top1_budget", "cosine_budget", "Budget"]


@dataclass
class Budget:
    """A limit on one measure of an INT8 artifact; the search minimises its loss (lower is better)."""

    option: str  # the flag ("--max-drop"), for messages; its report key is the flag's name
    measure: str  # what is measured ("drop", "cosine"): the report's initial_/final_ keys
    limit: float  # the flag's value as the user gave it
    initial: float  # the measure of the artifact as exported
    measure_of: Callable[[object], float]  # a candidate's runner → its measure
    describe: Callable[[float], str]  # a measure, for messages
    higher_is_better: bool = False  # cosine: the loss is 1 - cosine

    def loss(self, measure: float) -> float:
        return 1.0 - measure if self.higher_is_better else measure

    def from_loss(self, loss: float) -> float:
        return 1.0 - loss if self.higher_is_better else loss

    @property
    def fits_initially(self) -> bool:
        return self.loss(self.initial) <= self.loss(self.limit) + 1e-12


def top1_budget(entry: Artifact, sources: ExportSources, max_drop: float, dynamic: bool) -> Budget:
    eval_set, progress = sources.prepared.eval_set, sources.progress

    def measure_of(runner) -> float:
        with progress.bar("Evaluating candidate", len(eval_set.images)) as advance:
            logits = eval_set.logits(lambda x: sources.logits(runner, x, dynamic), advance)
        return accuracy_entry(logits, eval_set)["drop"]

    return Budget("--max-drop", "drop", max_drop, entry.accuracy.drop, measure_of, lambda d: f"top-1 drop {d:.2f}")


def cosine_budget(entry: Artifact, sources: ExportSources, min_cosine: float, dynamic: bool) -> Budget:
    def measure_of(runner) -> float:
        return sources.worst_cosine(runner, dynamic)

    initial = min([entry.parity.cosine] + [p["cosine"] for p in entry.details.get("parity_at_sizes", [])])
    at_sizes = f" at {len(sources.sizes)} sizes" if len(sources.sizes) > 1 else ""
    return Budget("--min-cosine", "cosine", min_cosine, initial, measure_of,
                  lambda c: f"worst cosine{at_sizes} {c:.5f}", higher_is_better=True)


def fit_or_gate(target: Target, entry: Artifact, path: Path, metadata: dict, sources: ExportSources,
                budget: Budget, threads: int | None, dynamic: bool, reverify) -> None:
    summary = {budget.option.lstrip("-").replace("-", "_"): budget.limit, f"initial_{budget.measure}": budget.initial,
               "reverted_layers": [], "fits": budget.fits_initially}
    entry.details["accuracy_aware"] = summary
    if summary["fits"]:
        return
    revertible = target.revertible(path, sources)
    if revertible is None:  # no per-layer fallback: over the budget fails, the model is kept
        instead = "use --fp16" if "fp16" in target.precisions else "ship FP32"
        entry.fail("accuracy", f"{budget.describe(budget.initial)} misses {budget.option} {budget.limit:.10g} (this "
                               f"target has no per-layer fallback; {instead}); kept {path.name}")
        return
    from ..quant.accuracy_aware import fit_budget, rank_layers

    model, original, reverter = revertible
    progress, prepared = sources.progress, sources.prepared
    scratch = sources.scratch / f"candidate{target.suffix}"
    scratch.parent.mkdir(exist_ok=True)

    def run(candidate, fn):
        target.save_model(candidate, scratch, metadata)
        checker = target.check_runner(scratch, threads)
        with checker if checker is not None else target.load(scratch, threads) as runner:
            return fn(runner)

    def rank_run(candidate, fn):  # a target's in-memory runner where saving every candidate is slow
        runner = target.candidate_runner(candidate, threads)
        if runner is None:
            return run(candidate, fn)
        with runner:
            return fn(runner)

    reference = _flat_sizes([prepared.ref_parity] + [ref for _, _, ref in prepared.other_sizes])
    layers = len(reverter.layers(model))
    with progress.bar(f"Ranking {layers} int8 layers by sensitivity", layers) as advance:
        ranking = rank_layers(model, original,
                              lambda c: rank_run(c, lambda r: _flat_sizes(sources.outputs_at_every_size(r, dynamic))),
                              reference, advance, reverter)
    result = fit_budget(model, original, lambda c: budget.loss(run(c, budget.measure_of)), ranking,
                        budget.loss(budget.limit), budget.loss(budget.initial), progress.log, reverter,
                        describe=lambda loss: budget.describe(budget.from_loss(loss)))
    remove_artifact(scratch)
    target.save_model(result.model, path, metadata)
    summary.update(reverted_layers=result.reverted, fits=result.fits,
                   **{f"final_{budget.measure}": budget.from_loss(result.drop)},
                   steps=[{"reverted": s["reverted"], budget.measure: budget.from_loss(s["drop"])}
                          for s in result.steps], ranking=result.ranking[:10])
    entry.size_bytes = artifact_bytes(path)
    reverify()  # the report describes the model that was kept
    if not result.fits and entry.ok:
        entry.fail("accuracy", f"{budget.describe(budget.from_loss(result.drop))} misses {budget.option} "
                               f"{budget.limit:.10g} even with {len(result.reverted)} layers in float; kept the best "
                               f"model ({path.name})")


def _flat_sizes(per_size: list) -> np.ndarray:
    """Logits, or every feature map, at each verified size, in one flat array: what the ranking compares."""
    flat = [np.concatenate([np.ravel(v) for v in values.values()]) if isinstance(values, dict) else np.ravel(values)
            for values in per_size]
    return np.concatenate(flat).astype(np.float64)
