"""`rmt-deploy compare`: where an artifact stops matching PyTorch, tap by tap.

For each artifact: the reference model (from ``--weights``, else the checkpoint the artifact's
metadata names: the bundled demo or a file of that name and sha256 beside the artifact), N real
images preprocessed as the artifact records, forward hooks on the reference at every tap
(``rewrite.taps``), and a tapped copy of the artifact (``Target.load_taps``) returning the tensors
its tap map names. The comparators (``bench.taps``) give the per-tap errors, the first tap where
the error jumps and the worst taps; ``--isolate`` (``jobs.isolate``) adds each block's own INT8
error. Results go to ``compare.json`` and ``compare.png`` beside the artifact (or in ``--out``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..bench.taps import COMPARE_JSON, CompareResult, first_divergence, largest_jump, tap_error, worst_taps
from ..bundled import bundled_images, bundled_weights
from ..data.images import Preprocess, load_batch, open_image_set
from ..bench.schema import failure_reason
from ..errors import PROGRAMMING_ERRORS, BackendUnavailable, UserInputError
from ..targets import Target, target_for_path
from .predict import preprocess_from_metadata

__all__ = ["CompareOptions", "run_compare", "COMPARE_JSON", "COMPARE_PNG"]

COMPARE_PNG = "compare.png"


@dataclass
class CompareOptions:
    artifacts: tuple[Path, ...]
    weights: Path | None = None
    images: Path | np.ndarray | None = None  # a folder/list of images, or a preprocessed (N, 3, H, W) array
    samples: int = 8
    level: str = "block"
    isolate: bool = False
    worst: int = 5
    out: Path | None = None
    threads: int | None = None
    write: bool = True  # compare.json and compare.png


def check_options(opts: CompareOptions) -> None:
    from ..rewrite.taps import LEVELS

    if opts.level not in LEVELS:
        raise UserInputError(f"unknown --level {opts.level!r}; choose one of {', '.join(LEVELS)}")
    if not opts.artifacts:
        raise UserInputError("name at least one artifact to compare")
    if opts.threads is not None and opts.threads < 1:
        raise UserInputError("--threads must be at least 1")
    if opts.samples < 1 or opts.worst < 1:
        raise UserInputError("--samples and --worst must be at least 1")
    for path in opts.artifacts:
        if not Path(path).exists():
            raise UserInputError(f"artifact not found: {path}")
        if opts.isolate and not target_for_path(Path(path)).isolates_int8:
            raise UserInputError(f"--isolate needs INT8 ONNX or OpenVINO artifacts; {Path(path).name} is "
                                 f"{target_for_path(Path(path)).title} (drop --isolate for its per-tap errors)")
    if opts.out is not None and opts.out.exists() and not opts.out.is_dir():
        raise UserInputError(f"--out {opts.out} is a file; pass a folder")


def _describe(path: Path) -> tuple[Target, dict]:
    target = target_for_path(path)
    reason = target.unavailable_reason()
    if reason:
        raise UserInputError(f"{path.name}: cannot run {target.title} artifacts here: {reason}")
    try:
        return target, target.describe(path)
    except (UserInputError, *PROGRAMMING_ERRORS):  # ours are bugs, not bad input
        raise
    except Exception as e:  # noqa: BLE001 — a runtime refusing a damaged file: bad input, in one line
        raise UserInputError(f"{path}: not a readable {target.title} artifact ({failure_reason(e)})") from e


def _weights_for(path: Path, metadata: dict, given: Path | None) -> Path:
    """``--weights``, else the checkpoint the artifact was exported from, found by name and sha256."""
    from ..model.checkpoint import sha256_file

    if given is not None:
        return given
    sha, name = metadata.get("source_sha256"), metadata.get("source_checkpoint", "")
    if not sha:
        raise UserInputError(f"{path.name} has no rmt-deploy metadata (source checkpoint); pass --weights CKPT "
                             "with the weights it was exported from")
    candidates = [bundled_weights()] + ([path.parent / name, Path.cwd() / name] if name else [])
    for candidate in candidates:
        if candidate.is_file() and sha256_file(candidate) == sha:
            return candidate
    raise UserInputError(f"{path.name} was exported from {name or 'a checkpoint'} (sha256 {sha[:12]}…), which is "
                         f"not beside it; pass --weights {name or 'CKPT'}")


def _images(opts: CompareOptions, pre: Preprocess, size: tuple[int, int], progress) -> np.ndarray:
    if isinstance(opts.images, np.ndarray):
        x = opts.images
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(size):
            raise UserInputError(f"images have shape {tuple(x.shape)}; the artifact takes (N, 3, {size[0]}, {size[1]}) "
                                 "preprocessed arrays (or pass a folder of image files)")
        return x[: opts.samples].astype(np.float32)
    root = Path(opts.images) if opts.images is not None else bundled_images("val")
    if not root.exists():
        raise UserInputError(f"--images {root} not found")
    x, skipped, _ = load_batch(open_image_set(root).subset(opts.samples), pre)
    for path in skipped:
        progress.log(f"skipped unreadable image {path}")
    if not len(x):
        raise UserInputError(f"none of the images in {root} could be decoded")
    return x


def _reference(loaded, taps: list[str], x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    import torch

    from ..model.rmt import attention_in_chunks
    from ..rewrite.taps import ReferenceTaps

    with ReferenceTaps(loaded.model, taps) as hooks, torch.inference_mode(), attention_in_chunks(loaded.model):
        logits = np.concatenate([loaded.model(torch.from_numpy(x[i:i + 4])).numpy() for i in range(0, len(x), 4)])
    return hooks.arrays(), logits


def _artifact_taps(target: Target, path: Path, tensors: list[str], x: np.ndarray, threads) -> dict[str, np.ndarray]:
    try:
        runner = target.load_taps(path, tensors, threads)
    except BackendUnavailable as e:
        raise UserInputError(f"{path.name}: {e}") from None
    rows: list[dict] = []
    with runner:
        name = runner.input_names()[0]
        for i in range(len(x)):
            rows.append(runner.infer({name: x[i:i + 1]}))
    return {t: np.concatenate([r[t] for r in rows]) for t in tensors if t in rows[0]}


def compare_one(path: Path, opts: CompareOptions, progress) -> tuple[CompareResult, dict]:
    """One artifact: its per-tap errors, plus what ``--isolate`` needs (reference logits, images)."""
    from ..model.checkpoint import load_model
    from ..rewrite.taps import decode_taps, tap_names, to_reference_layout

    target, info = _describe(path)
    if type(target).load_taps is Target.load_taps:  # nothing can read its intermediate tensors
        raise UserInputError(f"{path.name}: {target.no_taps_reason}")
    metadata = info.get("metadata") or {}
    weights = _weights_for(path, metadata, opts.weights)
    if metadata.get("task") == "backbone":
        raise UserInputError(f"{path.name} is a backbone (feature maps); compare handles classifiers in this "
                             "version: its report's per-output parity shows which map drifts")
    tap_map = decode_taps(metadata)
    if tap_map is None:
        raise UserInputError(f"{path.name} has no tap map (rmt_deploy.taps metadata); re-export it with this "
                             "version of rmt-deploy")
    with progress.step(f"Loading {weights.name}"):
        loaded = load_model(weights, metadata.get("arch") or None)
    pre = preprocess_from_metadata(metadata, info["input_shape"])
    if pre is None:
        raise UserInputError(f"{path.name} has no preprocessing metadata (input size, mean/std); re-export it")
    x = _images(opts, pre, pre.size, progress)
    taps = tap_names(loaded.model.cfg, opts.level)
    with progress.step(f"PyTorch reference at {len(taps)} taps on {len(x)} images"):
        reference, logits = _reference(loaded, taps, x)
    present = [t for t in taps if t in tap_map]
    with progress.step(f"{path.name} at {len(present)} taps ({target.title})"):
        values = _artifact_taps(target, path, sorted({tap_map[t] for t in present}), x, opts.threads)
    errors, missing = [], [t for t in taps if t not in tap_map]
    for tap in present:
        value = values.get(tap_map[tap])
        if value is None:
            missing.append(tap)
            continue
        value = to_reference_layout(value.astype(np.float32), reference[tap].shape)
        if value is None:
            raise UserInputError(f"{path.name}: tap {tap} has shape {values[tap_map[tap]].shape}, the reference "
                                 f"{reference[tap].shape}; are --weights the ones it was exported from?")
        errors.append(tap_error(tap, reference[tap], value))
    result = CompareResult(str(path), target.name, metadata.get("precision", "fp32"), _runtime(target), opts.level,
                           int(len(x)), errors, first_divergence(errors), worst_taps(errors, opts.worst),
                           largest_jump(errors), missing=missing)
    return result, {"x": x, "logits": logits, "taps": taps, "tap_map": tap_map, "target": target,
                    "model": loaded.model, "size": tuple(pre.size), "dynamic_batch": bool(info["dynamic_batch"])}


def _runtime(target: Target) -> str:
    return target.checked_by or target.name


def run_compare(opts: CompareOptions, progress) -> list[CompareResult]:
    """Compare every artifact; write compare.json and compare.png (atomically) unless ``opts.write`` is off."""
    check_options(opts)
    results = []
    for path in opts.artifacts:
        result, ctx = compare_one(Path(path), opts, progress)
        if opts.isolate:
            from .isolate import isolate

            result.isolate = isolate(Path(path), result, ctx, opts, progress)
        results.append(result)
    if opts.write:
        _write(results, opts)
    return results


def _write(results: list[CompareResult], opts: CompareOptions) -> None:
    from ..bench.taps_plot import write_taps_plot

    folder = opts.out if opts.out is not None else Path(results[0].path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"cannot write to {folder}: {e.strerror}") from None
    plot = write_taps_plot(folder / COMPARE_PNG, results)
    for result in results:
        result.plot = str(plot) if plot else None
    write_text_atomic(folder / COMPARE_JSON, json.dumps({"artifacts": [r.to_dict() for r in results]}, indent=2))
