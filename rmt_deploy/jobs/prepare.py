"""Prepare an export, once for all targets: the model, its input size and preprocessing, the
verification images and PyTorch's logits on them, calibration images, the deploy form and the
metadata every artifact carries."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bench.evaluate import EvalSet, batch_size_for, reference_logits
from ..bundled import bundled_images
from ..data.images import ImageSet, Preprocess, load_batch, open_image_set
from ..errors import UserInputError
from ..model.checkpoint import LoadedModel, load_model, metadata_json
from ..rewrite import table_bytes, to_deploy
from ..sizes import parse_img_size
from ..version import __version__
from .plan import MIN_CALIB_IMAGES, Plan

__all__ = ["Prepared", "prepare", "TABLE_LIMIT"]

TABLE_LIMIT = 1 << 30  # constant tables per model; ONNX files without external data stop at 2 GiB


@dataclass
class Prepared:
    loaded: LoadedModel
    size: tuple[int, int]
    pre: Preprocess
    images: ImageSet  # the verification images
    x_parity: np.ndarray
    ref_parity: np.ndarray  # PyTorch FP32 logits on x_parity
    skipped: list[Path]
    eval_set: EvalSet | None  # labelled and matching the model's classes: accuracy too
    calib: np.ndarray | None
    deploy: object  # the deploy-form module
    classes: list[str] | None
    metadata: dict[str, str]  # what every artifact says about itself (precision added per artifact)


def prepare(plan: Plan, progress) -> Prepared:
    opts = plan.opts
    with progress.step(f"Loading {plan.weights.name}"):
        loaded = load_model(plan.weights, opts.arch)
    size = _input_size(loaded, opts.img_size)
    _check_size(loaded, size)
    pre = _preprocess(loaded, opts, size)
    with progress.step("Reading verification images"):
        images, scored = _eval_images(opts.eval_dir, opts.label_map, loaded.num_classes)
        x_parity, skipped, _ = load_batch(images.subset(opts.parity_samples), pre)
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
    if opts.max_drop is not None and eval_set is None:
        raise UserInputError("--max-drop needs a labelled evaluation set: pass --eval DIR with one folder per "
                             "class, matching the model's classes")
    calib = _calibration_samples(opts.calib, opts.calib_size, pre, progress) if plan.calibrate else None
    if opts.dynamic_batch:
        for target in plan.targets:
            if not target.dynamic_batch:
                progress.log(f"{target.name}: batch fixed at 1 (--dynamic-batch applies to ONNX only)")
    with progress.step(f"Rewriting {loaded.variant} to deploy form at {size[0]}x{size[1]}"):
        deploy = to_deploy(loaded.model, size)
    # Class names: an explicit --label-map wins, then names stored in the checkpoint, then
    # the evaluation set's folder names.
    stored = metadata_json(loaded.checkpoint, "rmt_deploy.classes")
    folders = list(images.classes) if scored else None
    classes = folders if (opts.label_map and scored) else (stored or folders)
    return Prepared(loaded, size, pre, images, x_parity, ref_parity, skipped, eval_set, calib, deploy, classes,
                    _metadata(loaded, size, pre, opts.dynamic_batch, classes))


def _check_size(loaded: LoadedModel, size: tuple[int, int]) -> None:
    need = table_bytes(loaded.model.cfg, size)
    if need > TABLE_LIMIT:
        side = 32
        while table_bytes(loaded.model.cfg, (side + 32, side + 32)) <= TABLE_LIMIT:
            side += 32
        raise UserInputError(f"--img-size {size[0]}x{size[1]} needs {need / 2**30:.1f} GiB of decay tables "
                             f"in the {loaded.variant} graph (limit 1 GiB); use at most about {side}x{side}")


def _preprocess(loaded: LoadedModel, opts, size: tuple[int, int]) -> Preprocess:
    meta = loaded.checkpoint
    crop = opts.crop_pct if opts.crop_pct is not None else float(meta.metadata.get("rmt_deploy.crop_pct", 0.875))
    mean = opts.mean or tuple(metadata_json(meta, "rmt_deploy.mean") or (0.485, 0.456, 0.406))
    std = opts.std or tuple(metadata_json(meta, "rmt_deploy.std") or (0.229, 0.224, 0.225))
    return Preprocess(size, crop_pct=crop, mean=tuple(mean), std=tuple(std))


def _input_size(loaded: LoadedModel, asked: tuple[int, int] | None) -> tuple[int, int]:
    if asked:
        return asked
    stored = loaded.checkpoint.metadata.get("rmt_deploy.input_size")
    if stored:
        return parse_img_size(stored)
    hint = loaded.checkpoint.hints.get("input_size")
    return parse_img_size(str(hint)) if hint else (224, 224)


def _eval_images(eval_dir: Path | None, label_map: Path | None, num_classes: int) -> tuple[ImageSet, bool]:
    """The verification images and whether their labels can score this model."""
    explicit = eval_dir is not None
    root = eval_dir if explicit else bundled_images("val")
    if not explicit and not root.exists():
        raise UserInputError(f"bundled images not found at {root} (install from a source checkout "
                             "with pip install -e .), or pass --eval DIR")
    images = open_image_set(root, label_map)
    if images.classes is None:
        return images, False
    if len(images.classes) != num_classes:
        if explicit:
            raise UserInputError(f"--eval {root} has {len(images.classes)} class folders but the model "
                                 f"has {num_classes} classes; pass a matching set (or a flat folder "
                                 "for parity only)")
        return images, False  # bundled digits with a 1000-class model: parity only
    return images, True


def _calibration_samples(calib: Path | None, calib_size: int, pre: Preprocess, progress) -> np.ndarray:
    """Decode the calibration subset up front, so bad input fails before any export work."""
    explicit = calib is not None
    root = Path(calib) if explicit else bundled_images("train")
    if not explicit and not root.exists():
        raise UserInputError(f"bundled calibration images not found at {root}; pass --calib DIR")
    images = open_image_set(root).subset(calib_size)
    with progress.bar(f"Reading {len(images)} calibration images", len(images)) as advance:
        samples, skipped, _ = load_batch(images, pre, advance)
    if skipped:
        shown = ", ".join(p.name for p in skipped[:5]) + (" …" if len(skipped) > 5 else "")
        progress.log(f"skipped {len(skipped)} unreadable calibration file(s): {shown}")
    if len(samples) < MIN_CALIB_IMAGES:
        raise UserInputError(f"only {len(samples)} usable calibration image(s) in {root}; INT8 needs at least "
                             f"{MIN_CALIB_IMAGES} (256 recommended)")
    if len(samples) < calib_size:
        progress.log(f"calibrating on {len(samples)} images ({root} has fewer than --calib-size {calib_size})")
    return samples


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
