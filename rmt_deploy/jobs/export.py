"""The export job: plan → prepare → one step per (target, precision) → report.

``run_export`` is what ``rmt-deploy export`` calls. Everything is written into a private
temporary folder next to ``out`` and renamed into place at the end, so a failed or
interrupted run never leaves half-written output.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..artifacts import artifact_bytes, remove_artifact
from ..bench.accuracy import topk_accuracy
from ..bench.environment import environment
from ..bench.memory import peak_rss_bytes
from ..bench.report import write_report
from ..bench.schema import Artifact, failure_reason, stamp
from ..data.images import EXIF
from ..errors import VerificationError
from ..outdir import REPORT_JSON, writing
from ..progress import NullProgress
from ..targets import ExportRequest
from .budget import cosine_budget, fit_or_gate, top1_budget
from .plan import Cell, ExportOptions, Plan, plan
from .prepare import Prepared, prepare, run_memory_bytes
from .sources import ExportSources
from .verify import MIN_COSINE, verify

__all__ = ["ExportOptions", "run_export", "SCRATCH"]

SCRATCH = ".work"  # inside the private output folder: intermediate files, removed before commit


def run_export(opts: ExportOptions, progress=None) -> dict:
    """Run the whole export; returns the report dict (also written to ``opts.out``).

    Raises:
        UserInputError: bad checkpoint, size, target, folder (exit 2; nothing written).
        VerificationError: an artifact failed to export or disagrees with the reference
            (exit 1; the report, with the failed entry and its reason, is written; the bad
            artifact is not). The other targets still run unless ``strict``.
    """
    progress = progress or NullProgress()
    job = plan(opts)
    with writing(opts.out) as folder:
        prepared = prepare(job, progress)
        sources = ExportSources(opts, prepared, folder / SCRATCH, progress)
        entries = [_step(cell, folder, sources, opts).to_dict() for cell in job.cells]
        shutil.rmtree(folder / SCRATCH, ignore_errors=True)
        for target in job.targets:
            target.finalize(folder, [e for e in entries if e["target"] == target.name])
        report = _report(job, prepared, entries)
        write_report(folder, report)
    failed = [a for a in report["artifacts"] if a["status"] == "failed"]
    if failed:
        raise VerificationError("; ".join(f"{a['target']}/{a['precision']}: {a['reason']}" for a in failed)
                                + f" (report: {Path(opts.out) / REPORT_JSON})")
    return report


def _step(cell: Cell, folder: Path, sources: ExportSources, opts: ExportOptions) -> Artifact:
    """One artifact: export, inspect, verify. Any failure here is about this artifact (its converter,
    its runtime, the file it wrote: the user's input was checked by ``plan`` and ``prepare``), so it
    is recorded with the stage it happened in and the other cells still run."""
    target, precision = cell.target, cell.precision
    entry = Artifact(target.name, precision)  # plan() has checked that the target can export here
    stage = "export"
    try:
        written = _export(cell, entry, folder, sources, opts)
        if written is None:
            return entry
        path, metadata = written
        stage = "inspection"
        with sources.progress.step(f"Inspecting {target.name}/{precision}"):
            entry.graph = target.inspect(path)
        if entry.graph and entry.graph.get("problems"):  # e.g. CoreML preflight: a tensor above rank 5
            _reject(entry, path, "preflight", "; ".join(entry.graph["problems"]))
            return entry
        stage = "validation"
        _verify_and_fit(cell, entry, path, metadata, sources, opts)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 — recorded in the report unless --strict
        if opts.strict or os.environ.get("RMT_DEPLOY_DEBUG"):
            raise
        for leftover in target.leftovers(folder, precision):
            remove_artifact(leftover)
        entry.path = entry.size_bytes = None
        entry.fail(stage, failure_reason(e))
    return entry


def _export(cell: Cell, entry: Artifact, folder: Path, sources: ExportSources, opts: ExportOptions
            ) -> tuple[Path, dict[str, str]] | None:
    """Write the artifact: its path and the metadata it carries, or None when the target recorded it
    as skipped or failed."""
    target, precision = cell.target, cell.precision
    metadata = {**sources.prepared.metadata, "precision": precision, "dynamic_batch": str(cell.dynamic_batch).lower()}
    request = ExportRequest(precision, target.artifact_path(folder, precision), metadata, cell.dynamic_batch,
                            cell.options, opts.threads)
    start = time.perf_counter()
    exported = target.export(sources, request)
    entry.export_seconds = exported.seconds if exported.seconds is not None else round(time.perf_counter() - start, 2)
    entry.details.update(exported.fields)
    shipped = exported.shipped or exported.path
    if shipped is not None:
        entry.path, entry.size_bytes = shipped.name, artifact_bytes(shipped)
    if exported.status != "ok" or exported.path is None:
        entry.status, entry.stage, entry.reason = exported.status, exported.stage, exported.reason
        return None
    return exported.path, request.metadata


def _verify_and_fit(cell: Cell, entry: Artifact, path: Path, metadata: dict[str, str], sources: ExportSources,
                    opts: ExportOptions) -> None:
    """Verify the written artifact; under an INT8 budget, revert layers until it fits (the search
    re-saves the artifact with ``metadata``)."""
    verify(cell.target, entry, path, sources, opts, cell.dynamic_batch)
    budget = _budget(cell, entry, sources, opts)
    guard = None
    if not entry.ok:
        # Under a budget, an INT8 model is judged after the search: reverting its most sensitive
        # layers can lift it over the gross-error guard (a bad calibration set; float layers run in
        # bf16 on AMX CPUs). Unchanged, the guard's verdict stands.
        if budget is None or entry.stage != "validation":
            _reject(entry, path, entry.stage, entry.reason)
            return
        guard = (entry.stage, entry.reason)
        entry.status, entry.stage, entry.reason = "ok", None, None
    if budget is None:
        return
    fit_or_gate(cell.target, entry, path, metadata, sources, budget, opts.threads, cell.dynamic_batch,
                lambda: _reverify(cell, entry, path, sources, opts))
    if guard and not entry.details["accuracy_aware"]["reverted_layers"]:
        _reject(entry, path, *guard)


def _budget(cell: Cell, entry: Artifact, sources: ExportSources, opts: ExportOptions):
    """The INT8 budget that applies to this artifact (``--max-drop`` with labels, ``--min-cosine``), or None."""
    if cell.precision != "int8" or not cell.target.gates_accuracy:
        return None
    if opts.max_drop is not None and entry.accuracy is not None:
        return top1_budget(entry, sources, opts.max_drop, cell.dynamic_batch)
    if opts.min_cosine is not None and entry.parity is not None:
        return cosine_budget(entry, sources, opts.min_cosine, cell.dynamic_batch)
    return None


def _reverify(cell: Cell, entry: Artifact, path: Path, sources: ExportSources, opts: ExportOptions) -> None:
    entry.graph = cell.target.inspect(path)  # the kept model, with its reverted layers
    verify(cell.target, entry, path, sources, opts, cell.dynamic_batch)
    if not entry.ok:
        _reject(entry, path, entry.stage, entry.reason)


def _reject(entry: Artifact, path: Path, stage: str, reason: str) -> None:
    """A written artifact that fails its check is not shipped."""
    remove_artifact(path)
    entry.path = None
    entry.fail(stage, f"{reason}; model removed")


def _report(job: Plan, prepared: Prepared, entries: list[dict]) -> dict:
    opts, loaded, eval_set = job.opts, prepared.loaded, prepared.eval_set
    skipped = prepared.skipped + list(eval_set.skipped if eval_set else [])
    backbone = opts.task == "backbone"
    return {
        **stamp(),
        "model": {
            "task": opts.task,
            "variant": loaded.variant,
            "num_classes": None if backbone else loaded.num_classes,
            **(_backbone_entry(loaded, prepared.deploy) if backbone else {}),
            "params_m": round(sum(p.numel() for p in loaded.model.parameters()) / 1e6, 3),
            "input_size": list(prepared.size),
            "dynamic_batch": opts.dynamic_batch or opts.dynamic,
            **(_dynamic_entry(prepared) if prepared.size_range else {}),
            "checkpoint": str(job.weights.resolve()),
            "checkpoint_entry": loaded.checkpoint.source_key,
            "sha256": loaded.sha256,
            "preprocess": {**(prepared.mmdet_pre or prepared.pre).to_dict(), "exif": EXIF},
            "class_names": prepared.classes,
            # One image's decay terms and largest chunk of attention scores in the artifacts (an estimate).
            "run_memory_mb": round(run_memory_bytes(loaded.model.cfg, prepared.size) / 1e6, 1),
            "attention_chunks": prepared.metadata["attention_chunks"],
            "attention_chunk_mb": int(prepared.metadata["attention_chunk_mb"]),
        },
        "peak_rss_mb": _peak_rss_mb(),  # this export run: model, exports, calibration, verification
        "verification": {
            "images": str(prepared.images.root),
            "bundled_images": opts.eval_dir is None,  # the demo digits: accuracy only if the model is the demo's
            "parity_samples": int(len(prepared.x_parity)),
            "eval_samples": int(len(eval_set.labels)) if eval_set else None,
            "reference_accuracy": topk_accuracy(eval_set.reference, eval_set.labels) if eval_set else None,
            "atol": opts.atol,
            "min_cosine": dict(MIN_COSINE),  # the worst-image cosine each precision must reach
            "skipped_images": sorted({str(p) for p in skipped}),
        },
        # INT8 calibration set (None when nothing calibrated): source demo/user, path, images, file-list digest.
        "calibration": prepared.calibration,
        "artifacts": entries,
        "environment": environment(),
    }


def _dynamic_entry(prepared: Prepared) -> dict:
    """--dynamic: the sizes each side may take and where every artifact was checked."""
    size_range = prepared.size_range
    return {"dynamic_size": {"min": size_range.low, "max": size_range.high,
                             "verified_sizes": [list(s) for s in prepared.verified_sizes]}}


def _backbone_entry(loaded, deploy) -> dict:
    return {
        "outputs": deploy.outputs(),
        "extra_norms": not loaded.features_only,
        "checkpoint_kind": loaded.task,
        "ignored_parts": loaded.ignored,
    }


def _peak_rss_mb() -> float | None:
    peak = peak_rss_bytes()
    return None if peak is None else round(peak / 1e6, 1)
