"""The export job: checkpoint → deploy form → artifacts → verification → report.

``run_export`` is what ``rmt-deploy export`` calls. Everything is written into a private
temporary folder next to ``out`` and renamed into place at the end, so a failed or
interrupted run never leaves half-written output.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .bench.accuracy import topk_accuracy
from .bench.environment import environment
from .bench.evaluate import EvalSet, accuracy_entry, batch_size_for, reference_logits, runner_logits
from .bench.latency import measure
from .bench.parity import compare_logits
from .bench.report import REPORT_JSON, write_report
from .data.images import ImageSet, Preprocess, load_batch, open_image_set
from .errors import UserInputError, VerificationError
from .model.checkpoint import LoadedModel, load_model, metadata_json
from .outdir import commit_out, prepare_out
from .rewrite import table_bytes, to_deploy
from .targets import TargetSpec, resolve_target, target_module

__all__ = ["ExportOptions", "run_export", "parse_img_size", "bundled_weights", "bundled_images",
           "NullProgress", "MAX_SIDE"]

PACKAGE_DIR = Path(__file__).resolve().parent
MAX_SIDE = 2048  # a sanity bound; the real limit depends on the variant (see _check_size)
TABLE_LIMIT = 1 << 30  # constant tables per model; ONNX files without external data stop at 2 GiB


def bundled_weights() -> Path:
    return PACKAGE_DIR / "assets" / "rmt_demo.safetensors"


def bundled_images(split: str) -> Path:
    """calib/<split> of the source checkout (the package is installed editable)."""
    return PACKAGE_DIR.parent / "calib" / split


@dataclass
class ExportOptions:
    """Everything ``rmt-deploy export`` accepts; defaults are the documented CLI defaults."""

    weights: Path | None = None  # None: the bundled demo checkpoint
    arch: str | None = None  # None: detect from the checkpoint
    img_size: tuple[int, int] | None = None  # None: checkpoint hint, else 224x224
    dynamic_batch: bool = False
    targets: tuple[str, ...] = ("onnx",)
    out: Path = Path("rmt-deploy-out")
    eval_dir: Path | None = None  # None: bundled calib/val
    label_map: Path | None = None
    parity_samples: int = 16
    atol: float = 1e-4
    bench_iters: int = 30
    bench_warmup: int = 5
    threads: int | None = None  # None: all cores
    strict: bool = False  # re-raise a target's failure instead of recording it
    crop_pct: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


class NullProgress:
    """Progress sink used when nobody is watching (library calls, tests)."""

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator:
        """Like ``step`` for counted work; yields ``advance(n)``."""
        yield lambda n=1: None

    def log(self, message: str) -> None:
        pass


def parse_img_size(text: str) -> tuple[int, int]:
    """'224' → (224, 224); '256x320' → (256, 320) as (H, W). Multiples of 32, 32..MAX_SIDE."""
    raw = text.strip().lower().replace("×", "x")
    parts = raw.split("x") if "x" in raw else [raw, raw]
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"--img-size '{text}' is not a size; use e.g. 224 or 256x320 (HxW)") from None
    for side in (h, w):
        if side <= 0 or side > MAX_SIDE:
            raise UserInputError(f"--img-size {text}: each side must be between 32 and {MAX_SIDE}")
        if side % 32:
            lo, hi = side // 32 * 32, side // 32 * 32 + 32
            near = f"{lo} or {hi}" if lo else f"{hi}"
            raise UserInputError(f"--img-size {text}: {side} is not a multiple of 32 (RMT downsamples "
                                 f"by 32); use {near}")
    return h, w


def _check_size(loaded: LoadedModel, size: tuple[int, int]) -> None:
    need = table_bytes(loaded.model.cfg, size)
    if need > TABLE_LIMIT:
        side = 32
        while table_bytes(loaded.model.cfg, (side + 32, side + 32)) <= TABLE_LIMIT:
            side += 32
        raise UserInputError(f"--img-size {size[0]}x{size[1]} needs {need / 2**30:.1f} GiB of decay tables "
                             f"in the {loaded.variant} graph (limit 1 GiB); use at most about {side}x{side}")


def _preprocess(loaded: LoadedModel, opts: ExportOptions, size: tuple[int, int]) -> Preprocess:
    meta = loaded.checkpoint
    crop = opts.crop_pct if opts.crop_pct is not None else float(meta.metadata.get("rmt_deploy.crop_pct", 0.875))
    mean = opts.mean or tuple(metadata_json(meta, "rmt_deploy.mean") or (0.485, 0.456, 0.406))
    std = opts.std or tuple(metadata_json(meta, "rmt_deploy.std") or (0.229, 0.224, 0.225))
    return Preprocess(size, crop_pct=crop, mean=tuple(mean), std=tuple(std))


def _input_size(loaded: LoadedModel, opts: ExportOptions) -> tuple[int, int]:
    if opts.img_size:
        return opts.img_size
    stored = loaded.checkpoint.metadata.get("rmt_deploy.input_size")
    if stored:
        return parse_img_size(stored)
    hint = loaded.checkpoint.hints.get("input_size")
    return parse_img_size(str(hint)) if hint else (224, 224)


def _eval_set(opts: ExportOptions, num_classes: int) -> tuple[ImageSet, bool]:
    """The verification images and whether their labels can score this model."""
    explicit = opts.eval_dir is not None
    root = opts.eval_dir if explicit else bundled_images("val")
    if not explicit and not root.exists():
        raise UserInputError(f"bundled images not found at {root} (install from a source checkout "
                             "with pip install -e .), or pass --eval DIR")
    images = open_image_set(root, opts.label_map)
    if images.classes is None:
        return images, False
    if len(images.classes) != num_classes:
        if explicit:
            raise UserInputError(f"--eval {root} has {len(images.classes)} class folders but the model "
                                 f"has {num_classes} classes; pass a matching set (or a flat folder "
                                 "for parity only)")
        return images, False  # bundled digits with a 1000-class model: parity only
    return images, True


def _metadata(loaded: LoadedModel, size: tuple[int, int], pre: Preprocess, dynamic: bool,
              classes) -> dict[str, str]:
    return {
        "rmt_deploy.version": __version__,
        "arch": loaded.variant,
        "precision": "fp32",
        "input_size": f"{size[0]}x{size[1]}",
        "input_layout": "NCHW float32 RGB, normalised",
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "crop_pct": str(pre.crop_pct),
        "num_classes": str(loaded.num_classes),
        "class_names": json.dumps(list(classes)) if classes else "",
        "dynamic_batch": str(dynamic).lower(),
        "source_checkpoint": loaded.checkpoint.path.name,
        "source_sha256": loaded.sha256,
    }


def run_export(opts: ExportOptions, progress=None) -> dict:
    """Run the whole export; returns the report dict (also written to ``opts.out``).

    Raises:
        UserInputError: bad checkpoint, size, target, folder (exit 2; nothing written).
        VerificationError: an artifact failed to export or disagrees with the reference
            (exit 1; the report, with the failed entry and its reason, is written; the bad
            artifact is not). The other targets still run unless ``strict``.
    """
    progress = progress or NullProgress()
    specs: list[TargetSpec] = [resolve_target(t) for t in opts.targets]
    if not specs:
        raise UserInputError("no --target given; choose from onnx")
    if opts.parity_samples < 1:
        raise UserInputError("--parity-samples must be at least 1")
    if opts.threads is not None and opts.threads < 1:
        raise UserInputError("--threads must be at least 1")
    if opts.bench_iters < 0:
        raise UserInputError("--bench-iters must be 0 (skip) or more")
    if not opts.atol > 0:
        raise UserInputError("--atol must be a positive number")
    weights = Path(opts.weights) if opts.weights else bundled_weights()
    tmp = prepare_out(opts.out)
    try:
        report = _run(opts, specs, weights, tmp, progress)
        commit_out(tmp, opts.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    failed = [a for a in report["artifacts"] if a["status"] == "failed"]
    if failed:
        raise VerificationError("; ".join(f"{a['target']}/{a['precision']}: {a['reason']}" for a in failed)
                                + f" (report: {Path(opts.out) / REPORT_JSON})")
    return report


def _run(opts: ExportOptions, specs: list[TargetSpec], weights: Path, tmp: Path, progress) -> dict:
    with progress.step(f"Loading {weights.name}"):
        loaded = load_model(weights, opts.arch)
    size = _input_size(loaded, opts)
    _check_size(loaded, size)
    pre = _preprocess(loaded, opts, size)
    with progress.step("Reading verification images"):
        images, scored = _eval_set(opts, loaded.num_classes)
        parity_set = images.subset(opts.parity_samples)
        x_parity, skipped, _ = load_batch(parity_set, pre)
    for path in skipped:
        progress.log(f"skipped unreadable image {path}")
    with progress.step(f"PyTorch reference on {len(x_parity)} images"):
        ref_parity = reference_logits(loaded.model, x_parity)
    eval_set = None
    if scored:
        eval_set = EvalSet(images, pre, batch_size_for(loaded.model.cfg, size))
        with progress.bar("PyTorch FP32 reference on the evaluation set", len(images)) as advance:
            eval_set.reference = eval_set.logits(lambda x: reference_logits(loaded.model, x), advance)
        for path in eval_set.skipped:
            progress.log(f"skipped unreadable image {path}")
    with progress.step(f"Rewriting {loaded.variant} to deploy form at {size[0]}x{size[1]}"):
        deploy = to_deploy(loaded.model, size)

    # Class names: an explicit --label-map wins, then names stored in the checkpoint, then
    # the evaluation set's folder names.
    stored = metadata_json(loaded.checkpoint, "rmt_deploy.classes")
    folders = list(images.classes) if scored else None
    classes = folders if (opts.label_map and scored) else (stored or folders)
    metadata = _metadata(loaded, size, pre, opts.dynamic_batch, classes)
    artifacts = [
        _run_step(spec, tmp, opts.strict, lambda module, entry, spec=spec: _export_target(
            spec, module, entry, deploy, tmp, size, metadata, opts, x_parity, ref_parity, eval_set, progress))
        for spec in specs]

    ref_acc = topk_accuracy(eval_set.reference, eval_set.labels) if eval_set else None
    report = {
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "variant": loaded.variant,
            "num_classes": loaded.num_classes,
            "params_m": round(sum(p.numel() for p in loaded.model.parameters()) / 1e6, 3),
            "input_size": list(size),
            "dynamic_batch": opts.dynamic_batch,
            "checkpoint": str(weights.resolve()),
            "checkpoint_entry": loaded.checkpoint.source_key,
            "sha256": loaded.sha256,
            "preprocess": pre.to_dict(),
            "class_names": classes,
        },
        "verification": {
            "images": str(images.root),
            "parity_samples": int(len(x_parity)),
            "eval_samples": int(len(eval_set.labels)) if eval_set else None,
            "reference_accuracy": ref_acc,
            "atol": opts.atol,
            "skipped_images": sorted({str(p) for p in skipped + list(eval_set.skipped if eval_set else [])}),
        },
        "artifacts": artifacts,
        "environment": environment(),
    }
    write_report(tmp, report)
    return report


def _run_step(spec: TargetSpec, tmp: Path, strict: bool, export_and_verify) -> dict:
    """One (target, precision) cell: its failure is recorded, and the other targets still run."""
    entry = {"target": spec.name, "precision": "fp32", "path": None, "size_bytes": None,
             "status": "ok", "stage": None, "reason": None, "parity": None, "accuracy": None,
             "latency_ms": None, "graph": None, "export_seconds": None}
    module = target_module(spec)
    reason = module.unavailable_reason()
    if reason:
        return {**entry, "status": "skipped", "reason": reason}
    try:
        return export_and_verify(module, entry)
    except (UserInputError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 — recorded in the report unless --strict
        if strict or os.environ.get("RMT_DEPLOY_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        for leftover in tmp.glob(f"model{spec.suffix}*"):
            leftover.unlink()
        return {**entry, "status": "failed", "stage": "export", "path": None, "size_bytes": None,
                "reason": f"{type(e).__name__}: {first}"}


def _export_target(spec: TargetSpec, module, entry: dict, deploy, tmp: Path, size, metadata,
                   opts: ExportOptions, x_parity, ref_parity, eval_set: EvalSet | None, progress) -> dict:
    path = tmp / f"model{spec.suffix}"
    start = time.perf_counter()
    with progress.step(f"Exporting {spec.name} ({'dynamic' if opts.dynamic_batch else 'fixed'} batch)"):
        module.export(deploy, path, size, dynamic_batch=opts.dynamic_batch, metadata=metadata)
    entry.update(path=path.name, size_bytes=path.stat().st_size,
                 export_seconds=round(time.perf_counter() - start, 2))
    if hasattr(module, "inspect_graph"):
        entry["graph"] = module.inspect_graph(path)
    with module.load(path, opts.threads) as runner:
        with progress.step(f"Verifying {spec.name} on {len(x_parity)} real images"):
            entry["parity"] = compare_logits(ref_parity, runner_logits(runner, x_parity, opts.dynamic_batch, deploy.cfg))
        if eval_set is not None:
            with progress.bar(f"Evaluating {spec.name}", len(eval_set.images)) as advance:
                logits = eval_set.logits(
                    lambda x: runner_logits(runner, x, opts.dynamic_batch, deploy.cfg), advance)
            entry["accuracy"] = accuracy_entry(logits, eval_set)
        if opts.bench_iters > 0:
            with progress.step(f"Timing {spec.name} ({opts.bench_iters} runs)"):
                feeds = {runner.input_names()[0]: x_parity[:1]}

                def one_call() -> float:
                    runner.infer(feeds)
                    return runner.last_inference_s

                lat = measure(one_call, opts.bench_warmup, opts.bench_iters)
            entry["latency_ms"] = {**lat, "runtime": runner.name,
                                   "threads": opts.threads or os.cpu_count(), "batch": 1,
                                   "device": runner.device}
    max_abs = entry["parity"]["max_abs"]
    if not max_abs <= opts.atol:  # also catches NaN
        path.unlink()
        entry.update(status="failed", stage="validation", path=None,
                     reason=f"max abs diff {max_abs:.3g} vs PyTorch exceeds atol {opts.atol:g}; "
                            "model removed")
    return entry
