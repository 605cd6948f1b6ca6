"""Prepare an export, once for all targets: the model, its input size and preprocessing, the
verification images and PyTorch's logits on them, calibration images, the deploy form and the
metadata every artifact carries."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bench.evaluate import EvalSet, batch_size_for, reference_features, reference_logits
from ..bundled import DEMO_CALIB, bundled_images
from ..data import mmdet
from ..data.images import EXIF, ImageSet, Preprocess, UnreadableImage, load_batch, open_image_set, read_image
from ..errors import UserInputError
from ..model.checkpoint import LoadedModel, load_model, metadata_json
from ..model.dense import LoadedBackbone, load_backbone
from ..rewrite import CHUNK_BYTES, attention_bytes, chunk_plan, runtime_table_bytes, to_deploy
from ..sizes import SizeRange, parse_img_size
from ..targets import TARGETS
from ..version import __version__
from .plan import MIN_CALIB_IMAGES, Plan

__all__ = ["Prepared", "prepare", "MEMORY_LIMIT", "run_memory_bytes"]

# Run-time memory of one image's decay tables and attention matrices: the tables are built in the
# graph (the file stays small), so the bound is what a runtime must hold, not the file size.
MEMORY_LIMIT = 16 << 30
OTHER_SIZE_SAMPLES = 4  # parity images at each size a dynamic artifact is checked at besides its own
MMDET_SIZES = 4  # --resize mmdet: at most this many of the sizes the parity images resize to are checked


@dataclass
class Prepared:
    loaded: LoadedModel | LoadedBackbone
    size: tuple[int, int]
    pre: Preprocess
    images: ImageSet  # the verification images
    x_parity: np.ndarray
    ref_parity: np.ndarray | dict[str, np.ndarray]  # PyTorch FP32 logits (backbone: feature maps by name)
    skipped: list[Path]
    eval_set: EvalSet | None  # labelled and matching the model's classes: accuracy too
    calib: np.ndarray | None
    calibration: dict | None  # the calibration set as the report names it (source, path, images, digest)
    deploy: object  # the deploy-form module
    classes: list[str] | None
    metadata: dict[str, str]  # what every artifact says about itself (precision added per artifact)
    size_range: SizeRange | None = None  # --dynamic: the sizes one artifact takes
    # --dynamic: (size, images, PyTorch's outputs) at each other size the artifact is checked at
    other_sizes: list[tuple[tuple[int, int], np.ndarray, np.ndarray | dict[str, np.ndarray]]] = field(
        default_factory=list)
    mmdet_pre: Preprocess | None = None  # --resize mmdet: the per-image resize the artifact records

    @property
    def verified_sizes(self) -> list[tuple[int, int]]:
        """Every (H, W) the artifact is checked at, by area: ``size``, and with --dynamic the others."""
        sizes = {self.size, *(s for s, _, _ in self.other_sizes)}
        return sorted(sizes, key=lambda s: (s[0] * s[1], s))


def prepare(plan: Plan, progress) -> Prepared:
    opts = plan.opts
    backbone = opts.task == "backbone"
    with progress.step(f"Loading {plan.weights.name}" + (" (backbone)" if backbone else "")):
        loaded = (load_backbone(plan.weights, opts.arch, opts.out_indices or (0, 1, 2, 3)) if backbone
                  else load_model(plan.weights, opts.arch))
    mmdet_resize = backbone and opts.resize == "mmdet"  # each image at its own size (needs --dynamic)
    scale = (opts.resize_scale or mmdet.DEFAULT_SCALE) if mmdet_resize else None
    if scale:  # with mmdet's resize the size tuned and timed at defaults to the largest landscape input
        size = opts.img_size or mmdet.largest_input(scale)
    else:
        size = _input_size(loaded, opts.img_size, default=(512, 512) if backbone else (224, 224))
    size_range = _size_range(opts, size, scale)
    _check_size(loaded, (size_range.high, size_range.high) if size_range else size,
                "--max-size" if size_range else "--img-size")
    pre = _preprocess(loaded, opts, size, backbone)
    mmdet_pre = dataclasses.replace(pre, resize="mmdet", scale=scale) if scale else None
    with progress.step("Reading verification images"):
        images, scored = _eval_images(opts.eval_dir, opts.label_map, None if backbone else loaded.num_classes)
        x_parity, skipped, _ = load_batch(images.subset(opts.parity_samples), pre)
    for path in skipped:
        progress.log(f"skipped unreadable image {path}")
    shapes = f"sizes {size_range} (verified at {size[0]}x{size[1]})" if size_range else f"{size[0]}x{size[1]}"
    with progress.step(f"Rewriting {loaded.variant} to deploy form at {shapes}"):
        deploy = to_deploy(loaded.model, size, dynamic=size_range is not None,
                           largest=size_range.largest if size_range else None)
    _check_enumerated_chunks(plan, loaded, deploy, size_range)

    def reference(x: np.ndarray):
        return (reference_features(loaded.model, x, deploy.output_names) if backbone
                else reference_logits(loaded.model, x))

    with progress.step(f"PyTorch reference on {len(x_parity)} images"):
        ref_parity = reference(x_parity)
    other_sizes = []
    for other in (size_range.verified_sizes(size) if size_range else []):
        if other != size:
            with progress.step(f"PyTorch reference at {other[0]}x{other[1]}"):
                x, _, _ = load_batch(images.subset(min(opts.parity_samples, OTHER_SIZE_SAMPLES)),
                                     dataclasses.replace(pre, size=other))
                other_sizes.append((other, x, reference(x)))
    if mmdet_pre is not None:
        with progress.step(f"PyTorch reference on images at mmdet's sizes ({scale[0]}x{scale[1]})"):
            for other, x in _mmdet_groups(images.subset(opts.parity_samples), mmdet_pre, size_range, progress):
                if other != size and other not in [s for s, _, _ in other_sizes]:
                    other_sizes.append((other, x, reference(x)))
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
    calib, calibration = (_calibration_samples(opts.calib, opts.calib_size, pre, progress) if plan.calibrate
                          else (None, None))
    _say_what_verifies(opts.eval_dir, scored, progress)
    if opts.dynamic_batch:
        for target in plan.targets:
            if not target.dynamic_batch:
                able = ", ".join(t.name for t in TARGETS.values() if t.dynamic_batch)
                progress.log(f"{target.name}: batch fixed at 1 (--dynamic-batch applies to {able})")
    # Class names: an explicit --label-map wins, then names stored in the checkpoint, then
    # the evaluation set's folder names.
    stored = None if backbone else metadata_json(loaded.checkpoint, "rmt_deploy.classes")
    folders = list(images.classes) if scored else None
    classes = folders if (opts.label_map and scored) else (stored or folders)
    metadata = _metadata(loaded, size, pre, opts.dynamic_batch or opts.dynamic, classes)
    # Each stage's attention chunks (rewrite.chunks): what one image's scores were planned to fit.
    metadata.update(attention_chunks=chunk_plan(deploy), attention_chunk_mb=str(CHUNK_BYTES >> 20))
    if size_range:
        metadata["dynamic_size"] = str(size_range)  # each side, multiples of 32; input_size: the verified one
    if mmdet_pre is not None:  # rd.load applies it to each image
        metadata.update(resize="mmdet", resize_scale=f"{scale[0]}x{scale[1]}",
                        size_divisor=str(mmdet_pre.size_divisor))
    if backbone:
        metadata.update(_backbone_metadata(loaded, deploy))
    return Prepared(loaded, size, pre, images, x_parity, ref_parity, skipped, eval_set, calib, calibration, deploy,
                    classes, metadata, size_range, other_sizes, mmdet_pre)


def _size_range(opts, size: tuple[int, int], scale: tuple[int, int] | None) -> SizeRange | None:
    """--dynamic's range: --min-size/--max-size over the default around the verified size, which it must hold.
    With --resize mmdet (``scale``) the default top is the long side mmdet pads images to (1344 for 1333x800)."""
    if not opts.dynamic:
        return None
    default = SizeRange.around(size)
    if scale:  # up to the long side mmdet pads to (checked against --max-size by plan)
        default = SizeRange(default.low, max(mmdet.largest_input(scale)[1], *size))
    size_range = SizeRange(opts.min_size or min(default.low, opts.max_size or default.low),
                           opts.max_size or max(default.high, opts.min_size or default.high))
    if not size_range.holds(size):
        raise UserInputError(f"--img-size {size[0]}x{size[1]} (the size verified and calibrated at) is outside "
                             f"--min-size {size_range.low} .. --max-size {size_range.high}; widen the range")
    return size_range


def _mmdet_groups(images: ImageSet, resize: Preprocess, size_range: SizeRange, progress):
    """The parity images as mmdet's resize makes them, grouped by input size: the largest groups,
    up to MMDET_SIZES of them, OTHER_SIZE_SAMPLES images each. Images outside the range are left out."""
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for path in images.paths:
        try:
            x = resize(read_image(path))
        except UnreadableImage:
            continue
        shape = tuple(x.shape[1:])
        if size_range.holds(shape):
            groups.setdefault(shape, []).append(x)
        else:
            progress.log(f"{path.name} becomes {shape[0]}x{shape[1]} under mmdet's resize, outside {size_range}: "
                         "not verified at that size")
    largest = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:MMDET_SIZES]
    return [(shape, np.stack(xs[:OTHER_SIZE_SAMPLES])) for shape, xs in largest]


def run_memory_bytes(cfg, size: tuple[int, int]) -> int:
    """What one image needs at run time beyond the weights, in the deploy form's attention chunks
    (``rewrite.chunks``): the decay tables a runtime builds from the per-axis ones, and the largest
    chunk of attention scores with its softmax and a temporary."""
    return runtime_table_bytes(cfg, size, CHUNK_BYTES) + 3 * attention_bytes(cfg, size, CHUNK_BYTES)


def reference_memory_bytes(cfg, size: tuple[int, int]) -> int:
    """What verifying one image needs: the PyTorch reference, its attention in chunks
    (``model.rmt.attention_in_chunks``: one chunk's scores, decay, their sum and softmax), or the chunked
    artifact run beside it (``run_memory_bytes``), whichever is more; and stage 1's activations, which
    outgrow both at very large sizes (a block's input, q, k, v, attention, FFN hidden and output)."""
    tokens = (size[0] // 4) * (size[1] // 4)
    activations = 4 * tokens * cfg.embed_dims[0] * (6 + cfg.mlp_ratios[0])
    return max(4 * attention_bytes(cfg, size, CHUNK_BYTES), run_memory_bytes(cfg, size)) + activations


def _check_size(loaded, size: tuple[int, int], flag: str, limit: int = MEMORY_LIMIT) -> None:
    # An estimate of the attention's share, not of the process (weights, runtimes and other activations
    # come on top): with the reference in chunks, no allowed size (up to 2048) comes near the limit.
    cfg = loaded.model.cfg
    need = reference_memory_bytes(cfg, size)
    if need > limit:
        side = 32
        while reference_memory_bytes(cfg, (side + 32, side + 32)) <= limit:
            side += 32
        shown = f"{size[0]}x{size[1]}" if flag == "--img-size" else str(size[0])
        raise UserInputError(f"{flag} {shown} needs about {need / 2**30:.1f} GiB at run time to verify "
                             f"{loaded.variant} against its PyTorch reference (attention scores in chunks and "
                             f"decay terms; limit {limit / 2**30:.3g} GiB); use at most about {side}x{side}")


def _check_enumerated_chunks(plan: Plan, loaded, deploy, size_range) -> None:
    # Core ML's converter traces one size (torch.jit.trace) and takes the others as enumerated shapes:
    # chunk offsets computed from a traced size would be wrong at the others.
    chunks = chunk_plan(deploy)
    enumerated = next((t for t in plan.targets if t.enumerated_sizes), None)
    if size_range and enumerated and set(chunks) - set("1/,"):
        raise UserInputError(f"--target {enumerated.name} with --dynamic takes no attention in chunks, and --max-size "
                             f"{size_range.high} needs them for {loaded.variant} ({chunks}); lower --max-size, or "
                             f"export {enumerated.title} at one size without --dynamic")


def _preprocess(loaded, opts, size: tuple[int, int], backbone: bool) -> Preprocess:
    """Classifiers: resize + centre crop (checkpoint or flag crop_pct); backbones: mmdet's keep-ratio
    resize into the canvas, padded bottom/right."""
    meta = loaded.checkpoint
    crop = opts.crop_pct if opts.crop_pct is not None else float(meta.metadata.get("rmt_deploy.crop_pct", 0.875))
    mean = opts.mean or tuple(metadata_json(meta, "rmt_deploy.mean") or (0.485, 0.456, 0.406))
    std = opts.std or tuple(metadata_json(meta, "rmt_deploy.std") or (0.229, 0.224, 0.225))
    if backbone:
        return Preprocess(size, crop_pct=1.0, mean=tuple(mean), std=tuple(std), interpolation="bilinear",
                          resize="letterbox")
    return Preprocess(size, crop_pct=crop, mean=tuple(mean), std=tuple(std))


def _input_size(loaded, asked: tuple[int, int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if asked:
        return asked
    stored = loaded.checkpoint.metadata.get("rmt_deploy.input_size")
    if stored:
        return parse_img_size(stored)
    hint = loaded.checkpoint.hints.get("input_size")
    return parse_img_size(str(hint)) if hint else default


def _eval_images(eval_dir: Path | None, label_map: Path | None, num_classes: int | None) -> tuple[ImageSet, bool]:
    """The verification images and whether their labels can score this model (never a backbone's:
    ``num_classes`` None)."""
    explicit = eval_dir is not None
    root = eval_dir if explicit else bundled_images("val")
    images = open_image_set(root, label_map)
    if images.classes is None or num_classes is None:
        return images, False
    if len(images.classes) != num_classes:
        if explicit:
            raise UserInputError(f"--eval {root} has {len(images.classes)} class folders but the model "
                                 f"has {num_classes} classes; pass a matching set (or a flat folder "
                                 "for parity only)")
        return images, False  # bundled digits with a 1000-class model: parity only
    return images, True


def _say_what_verifies(eval_dir: Path | None, scored: bool, progress) -> None:
    if eval_dir is None:
        progress.log("no --eval: parity checked on the bundled demo images; "
                     + ("accuracy on their labels (the demo's digits)" if scored
                        else "accuracy not measured (pass --eval DIR, one folder per class)"))


def _calibration_samples(calib: Path | str | None, calib_size: int, pre: Preprocess, progress
                         ) -> tuple[np.ndarray, dict]:
    """Decode the calibration subset up front, so bad input fails before any export work; returns the
    samples and the set as the report names it (``plan`` has refused None for a user's checkpoint)."""
    demo = calib is None or calib == DEMO_CALIB
    root = bundled_images("train") if demo else Path(calib)
    images = open_image_set(root).subset(calib_size)
    if demo:
        progress.log(f"calibrating INT8 on the bundled demo digits ({root})")
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
    used = sorted(str(p.relative_to(root) if p.is_relative_to(root) else p) for p in images.paths if p not in skipped)
    return samples, {"source": "demo" if demo else "user", "path": str(root.resolve()), "images": int(len(samples)),
                     "digest": hashlib.sha256("\n".join(used).encode()).hexdigest()}


def _metadata(loaded, size: tuple[int, int], pre: Preprocess, dynamic: bool, classes) -> dict[str, str]:
    return {
        "rmt_deploy.version": __version__,
        "task": "classify",
        "arch": loaded.variant,
        "precision": "fp32",
        "input_size": f"{size[0]}x{size[1]}",
        "input_layout": "NCHW float32 RGB, normalised",
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "resize": pre.resize,
        "crop_pct": str(pre.crop_pct),
        "exif": EXIF,
        "num_classes": str(getattr(loaded, "num_classes", "")),
        "class_names": json.dumps(list(classes)) if classes else "",
        "dynamic_batch": str(dynamic).lower(),
        "source_checkpoint": loaded.checkpoint.path.name,
        "source_sha256": loaded.sha256,
    }


def _backbone_metadata(loaded: LoadedBackbone, deploy) -> dict[str, str]:
    """What a backbone artifact says about its outputs, so a detector's neck can be wired to it."""
    return {
        "task": "backbone",
        "num_classes": "",
        "outputs": json.dumps(deploy.outputs()),
        "out_indices": ",".join(map(str, deploy.out_indices)),
        "extra_norms": str(not loaded.features_only).lower(),  # false: raw stage outputs (classification ckpt)
        "checkpoint_kind": loaded.task,
        "pad": "bottom/right with 0 after normalisation",
    }
