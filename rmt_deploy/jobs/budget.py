"""INT8 within a top-1 budget (``--max-drop``): revert the most sensitive layers to float until
the drop fits, on targets whose int8 layers can be reverted one at a time; gate the others."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import artifact_bytes, remove_artifact
from ..bench.evaluate import accuracy_entry
from ..bench.schema import Artifact
from ..targets import Target
from .sources import ExportSources

__all__ = ["fit_or_gate"]


def fit_or_gate(target: Target, entry: Artifact, path: Path, metadata: dict, sources: ExportSources,
                max_drop: float, threads: int | None, dynamic: bool, reverify) -> None:
    drop = entry.accuracy.drop
    summary = {"max_drop": max_drop, "initial_drop": drop, "reverted_layers": [], "fits": drop <= max_drop}
    entry.details["accuracy_aware"] = summary
    if summary["fits"]:
        return
    revertible = target.revertible(path, sources)
    if revertible is None:  # no per-layer fallback: over the budget fails, the model is kept
        entry.fail("accuracy", f"top-1 drop {drop:.2f} exceeds --max-drop {max_drop:g} (this target has no "
                               f"per-layer fallback; use --fp16); kept {path.name}")
        return
    from ..quant.accuracy_aware import fit_budget, rank_layers

    model, original, reverter = revertible
    progress, prepared, eval_set = sources.progress, sources.prepared, sources.prepared.eval_set
    scratch = sources.scratch / f"candidate{target.suffix}"
    scratch.parent.mkdir(exist_ok=True)

    def logits_of(candidate, x):
        target.save_model(candidate, scratch, metadata)
        with target.load(scratch, threads) as runner:
            return sources.logits(runner, x, dynamic)

    layers = len(reverter.layers(model))
    with progress.bar(f"Ranking {layers} int8 layers by sensitivity", layers) as advance:
        ranking = rank_layers(model, original, lambda c: logits_of(c, prepared.x_parity), prepared.ref_parity,
                              advance, reverter)

    def drop_of(candidate) -> float:
        target.save_model(candidate, scratch, metadata)
        with target.load(scratch, threads) as runner:
            with progress.bar("Evaluating candidate", len(eval_set.images)) as advance:
                logits = eval_set.logits(lambda x: sources.logits(runner, x, dynamic), advance)
        return accuracy_entry(logits, eval_set)["drop"]

    result = fit_budget(model, original, drop_of, ranking, max_drop, drop, progress.log, reverter)
    remove_artifact(scratch)
    target.save_model(result.model, path, metadata)
    summary.update(reverted_layers=result.reverted, fits=result.fits, final_drop=result.drop,
                   steps=result.steps, ranking=result.ranking[:10])
    entry.size_bytes = artifact_bytes(path)
    reverify()  # the report describes the model that was kept
    if not result.fits and entry.ok:
        entry.fail("accuracy", f"top-1 drop {result.drop:.2f} exceeds --max-drop {max_drop:g} even with "
                               f"{len(result.reverted)} layers in float; kept the best model ({path.name})")
