"""Export options and the plan: every check that can fail before any work starts.

``plan(opts)`` reads the target table only: which targets, which precisions each writes,
which target options apply, which backends must be importable. A bad request is a
UserInputError (exit 2) before a single file is touched.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..bundled import DEMO_CALIB, bundled_weights
from ..errors import UserInputError
from ..optional import require
from ..quant.policy import STATISTICS
from ..targets import DEFAULT_TARGETS, TARGETS, Target, TargetOptions, resolve_target

__all__ = ["ExportOptions", "Plan", "Cell", "plan", "options_from_flags", "MIN_CALIB_IMAGES", "PRECISIONS", "TASKS"]

MIN_CALIB_IMAGES = 8  # fewer gives activation ranges from a handful of images
PRECISIONS = ("fp32", "int8", "fp16")  # the order cells run in (FP32 first: the baseline)
TASKS = ("classify", "backbone")


@dataclass
class ExportOptions:
    """Everything ``rmt-deploy export`` accepts; defaults are the documented CLI defaults."""

    weights: Path | None = None  # None: the bundled demo checkpoint
    arch: str | None = None  # None: detect from the checkpoint
    img_size: tuple[int, int] | None = None  # None: checkpoint hint, else 224x224
    dynamic_batch: bool = False
    # One artifact for many sizes: batch, height and width dynamic; img_size is the size it is
    # calibrated and timed at. Each side in [min_size, max_size] (None: SizeRange.around(img_size)).
    dynamic: bool = False
    min_size: int | None = None
    max_size: int | None = None
    # Backbones: how images become inputs. "letterbox" (default): fit into --img-size, pad; "mmdet"
    # (with --dynamic): mmdet's own test resize, each image at its own padded size (data.mmdet).
    resize: str | None = None
    resize_scale: tuple[int, int] | None = None  # mmdet: (long, short) edge limits; None: (1333, 800)
    targets: tuple[str, ...] = DEFAULT_TARGETS
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
    # Precision flags. ONNX always writes FP32 too (the baseline every report compares to);
    # other targets write what is asked, or their default (FP16 for CoreML).
    int8: bool = False
    fp16: bool = False
    fp32: bool = False
    # Calibration images; DEMO_CALIB: the bundled calib/train. None: the bundled set for the demo
    # checkpoint, refused for the user's own (plan).
    calib: Path | str | None = None
    calib_size: int = 256
    max_drop: float | None = None  # top-1 points; with a labelled eval set: accuracy-aware INT8
    min_cosine: float | None = None  # worst per-image cosine of every output: accuracy-aware INT8 without labels
    statistic: str = "minmax"
    # "classify": logits; "backbone": one feature map per stage in out_indices (detection/segmentation).
    task: str = "classify"
    out_indices: tuple[int, ...] | None = None  # backbone only; None: (0, 1, 2, 3)
    # Target name → that target's options (CoreMLSettings, TensorRTOptions); missing: defaults.
    target_options: dict[str, TargetOptions] = field(default_factory=dict)

    def asked_precisions(self) -> tuple[str, ...]:
        return tuple(p for p in PRECISIONS if getattr(self, p))


@dataclass(frozen=True)
class Cell:
    """One artifact to write: a target, a precision, that target's options."""

    target: Target
    precision: str
    options: TargetOptions | None
    dynamic_batch: bool


@dataclass
class Plan:
    opts: ExportOptions
    weights: Path
    cells: list[Cell]
    calibrate: bool  # some cell needs calibration images

    @property
    def targets(self) -> list[Target]:
        return list(dict.fromkeys(c.target for c in self.cells))


def options_from_flags(flags: dict, preset: str | Path | None = None, given: frozenset[str] | set[str] = frozenset()
                       ) -> ExportOptions:
    """ExportOptions from flag values by field name (``img_size`` may still be text, ``targets``
    comma-separated), with ``preset`` under them: the preset's values win over every field not
    in ``given`` (the fields the user set). The CLI and the Python API both build options here.
    """
    from ..sizes import parse_img_size
    from .presets import load_preset, merge

    flags = dict(flags)
    owned = {t.name: {f.name for f in dataclasses.fields(t.options_type)} for t in TARGETS.values() if t.options_type}
    target_flags = {name: {k: flags.pop(k) for k in names if k in flags} for name, names in owned.items()}
    targets = flags.get("targets", DEFAULT_TARGETS)
    flags["targets"] = tuple(t for v in ([targets] if isinstance(targets, str) else targets)
                             for t in str(v).split(",") if t.strip())
    size = flags.get("img_size")
    if size is not None:  # 224, "256x320", (256, 320): validated like the flag
        flags["img_size"] = parse_img_size("x".join(map(str, size)) if isinstance(size, (tuple, list)) else str(size))
    scale = flags.get("resize_scale")
    if scale is not None:
        flags["resize_scale"] = parse_resize_scale(scale)
    indices = flags.get("out_indices")
    if isinstance(indices, str):  # "1,2,3", as the flag takes it
        from ..model.dense import parse_out_indices

        flags["out_indices"] = parse_out_indices(indices)
    elif indices is not None:
        flags["out_indices"] = tuple(indices)
    for key in ("weights", "out", "eval_dir", "label_map", "calib"):
        if flags.get(key) is not None and not (key == "calib" and flags[key] == DEMO_CALIB):
            flags[key] = Path(flags[key])
    flags, target_flags = merge(load_preset(preset) if preset else None, flags, target_flags, set(given))
    options = {name: TARGETS[name].options_type(**values) for name, values in target_flags.items()}
    return ExportOptions(**flags, target_options=options)


def plan(opts: ExportOptions) -> Plan:
    """Validate ``opts`` against the target table; raise UserInputError / BackendUnavailable."""
    targets = list(dict.fromkeys(resolve_target(t) for t in opts.targets))
    if not targets:
        raise UserInputError(f"no --target given; choose from {', '.join(TARGETS)}")
    _check_numbers(opts)
    for name, options in opts.target_options.items():
        owner = resolve_target(name)
        if owner not in targets and not options.is_default():
            article = "an" if owner.title[0] in "AEIOU" else "a"
            what = f"are {owner.title} options" if "," in options.FLAGS else f"is {article} {owner.title} option"
            raise UserInputError(f"{options.FLAGS} {what}; add --target {owner.name}")
    cells = []
    for target in targets:
        precisions = target.precisions_for(opts.asked_precisions())
        unsupported = [p for p in precisions if p not in target.precisions]
        if unsupported:
            raise UserInputError(f"target {target.name} does not support {unsupported[0]}; it supports "
                                 f"{', '.join(target.precisions)}")
        options = opts.target_options.get(target.name) or target.default_options()
        if options is not None:
            options.check(precisions)
        if opts.dynamic and not target.dynamic_size:
            able = ", ".join(t.name for t in TARGETS.values() if t.dynamic_size)
            raise UserInputError(f"--dynamic: {target.title or target.name} artifacts take one input size here "
                                 f"(dynamic sizes: {able}); drop --dynamic or --target {target.name}")
        if opts.resize == "mmdet" and target.enumerated_sizes:
            raise UserInputError(f"--resize mmdet gives each image its own size, but a {target.title} package takes "
                                 f"only its enumerated sizes; export {target.title} without --resize mmdet (letterbox)")
        dynamic = (opts.dynamic_batch or opts.dynamic) and target.dynamic_batch
        cells += [Cell(target, p, options, dynamic) for p in precisions]
    calibrate = any(c.target.needs_calibration(c.precision, c.options) for c in cells)
    int8 = [c.target for c in cells if c.target.calibrated_int8 and c.precision == "int8"]
    for target in int8:
        if target.statistics is not None and opts.statistic not in target.statistics:
            raise UserInputError(f"--statistic {opts.statistic} is not available for {target.title} INT8; choose "
                                 f"{' or '.join(target.statistics)}")
    # Fail before any work, with the install hint.
    if any(t.calibrator == "nncf" for t in int8):
        require("nncf", "int8")
    for target in targets:
        target.require(next(c.options for c in cells if c.target is target),
                       tuple(c.precision for c in cells if c.target is target))
    if calibrate and opts.calib is None and _own_checkpoint(opts):
        raise UserInputError("INT8 with your own checkpoint calibrates on your images: pass --calib DIR (a few "
                             "hundred images like those the model will see; ImageFolder, flat folder or .txt list), "
                             f"or --calib {DEMO_CALIB} to calibrate on the bundled demo digits on purpose")
    return Plan(opts, Path(opts.weights) if opts.weights else bundled_weights(), cells, calibrate)


def _own_checkpoint(opts: ExportOptions) -> bool:
    """A checkpoint other than the bundled demo, whose images the bundled digits are not."""
    return opts.weights is not None and Path(opts.weights).resolve() != bundled_weights().resolve()


def _check_numbers(opts: ExportOptions) -> None:
    if opts.parity_samples < 1:
        raise UserInputError("--parity-samples must be at least 1")
    if opts.threads is not None and opts.threads < 1:
        raise UserInputError("--threads must be at least 1")
    if opts.bench_iters < 0:
        raise UserInputError("--bench-iters must be 0 (skip) or more")
    if not opts.atol > 0:
        raise UserInputError("--atol must be a positive number")
    if opts.max_drop is not None and not opts.max_drop >= 0:
        raise UserInputError(f"--max-drop {opts.max_drop} must be 0 or more (top-1 points, e.g. 0.5)")
    if opts.calib_size < MIN_CALIB_IMAGES:
        raise UserInputError(f"--calib-size {opts.calib_size} is too small; use at least {MIN_CALIB_IMAGES} "
                             "(256 recommended)")
    if opts.min_cosine is not None:
        if not 0 < opts.min_cosine <= 1:
            raise UserInputError(f"--min-cosine {opts.min_cosine:g} must be in (0, 1], e.g. 0.99")
        if opts.max_drop is not None:
            raise UserInputError("--max-drop and --min-cosine are two INT8 budgets; give one")
    if opts.task not in TASKS:
        raise UserInputError(f"--task {opts.task!r} is unknown; choose from {', '.join(TASKS)}")
    if opts.task == "backbone":
        if opts.max_drop is not None:
            raise UserInputError("--max-drop is a top-1 budget for classifiers; a backbone has no labels to score: "
                                 "use --min-cosine (e.g. 0.99) for its feature maps")
        if opts.label_map is not None:
            raise UserInputError("--label-map names classes; a backbone has none (drop it or use --task classify)")
        if opts.out_indices is not None:
            from ..model.dense import parse_out_indices

            parse_out_indices(",".join(map(str, opts.out_indices)))
    elif opts.out_indices is not None:
        raise UserInputError("--out-indices selects backbone feature maps; add --task backbone")
    _check_size_range(opts)
    _check_resize(opts)
    if opts.statistic not in STATISTICS:
        raise UserInputError(f"--statistic {opts.statistic!r} is unknown; choose from {', '.join(STATISTICS)}")


RESIZES = ("letterbox", "mmdet")


def parse_resize_scale(value) -> tuple[int, int]:
    """'1333x800' (or a pair) → (long, short) edge limits."""
    text = "x".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    try:
        long_side, short_side = sorted((int(v) for v in text.lower().replace("×", "x").split("x")), reverse=True)
    except ValueError:
        raise UserInputError(f"--resize-scale '{text}' is not LONGxSHORT edge limits; use e.g. 1333x800") from None
    if not 32 <= short_side <= long_side <= 4096:
        raise UserInputError(f"--resize-scale {text}: edge limits must be between 32 and 4096, e.g. 1333x800")
    return long_side, short_side


def _check_resize(opts: ExportOptions) -> None:
    if opts.resize is None:
        if opts.resize_scale is not None:
            raise UserInputError("--resize-scale sets mmdet's edge limits; add --resize mmdet")
        return
    if opts.resize not in RESIZES:
        raise UserInputError(f"--resize {opts.resize!r} is unknown; choose from {', '.join(RESIZES)}")
    if opts.task != "backbone":
        raise UserInputError("--resize is how a backbone's images are sized; classifiers resize and centre-crop "
                             "(add --task backbone or drop --resize)")
    if opts.resize == "letterbox" and opts.resize_scale is not None:
        raise UserInputError("--resize-scale sets mmdet's edge limits; use it with --resize mmdet")
    if opts.resize == "mmdet" and not opts.dynamic:
        raise UserInputError("--resize mmdet gives each image its own padded size; add --dynamic (with "
                             "--min-size/--max-size covering those sizes)")
    if opts.resize == "mmdet":
        from ..data.mmdet import DEFAULT_SCALE, largest_input
        from ..sizes import MAX_SIDE

        scale = opts.resize_scale or DEFAULT_SCALE
        longest = largest_input(scale)[1]
        if longest > MAX_SIDE:
            raise UserInputError(f"--resize-scale {scale[0]}x{scale[1]} pads long sides to {longest}, above the "
                                 f"largest side rmt-deploy exports ({MAX_SIDE}); use a long edge limit of at most "
                                 f"{MAX_SIDE}")
        if opts.max_size is not None and opts.max_size < longest:
            raise UserInputError(f"--max-size {opts.max_size} is below {longest}, the long side mmdet's resize "
                                 f"({scale[0]}x{scale[1]}) pads images to; use --max-size {longest}")


def _check_size_range(opts: ExportOptions) -> None:
    from ..sizes import check_side

    given = [(flag, v) for flag, v in (("--min-size", opts.min_size), ("--max-size", opts.max_size)) if v is not None]
    if given and not opts.dynamic:
        raise UserInputError(f"{given[0][0]} sets the range of a dynamic artifact; add --dynamic")
    for flag, side in given:
        check_side(flag, side)
    if opts.min_size is not None and opts.max_size is not None and opts.min_size > opts.max_size:
        raise UserInputError(f"--min-size {opts.min_size} is above --max-size {opts.max_size}; swap them")
