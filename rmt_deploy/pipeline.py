"""The export job: checkpoint → deploy form → artifacts → verification → report.

``run_export`` is what ``rmt-deploy export`` calls. Everything is written into a private
temporary folder next to ``out`` and renamed into place at the end, so a failed or
interrupted run never leaves half-written output.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .artifacts import artifact_bytes, artifact_stem, remove_artifact
from .bench.accuracy import topk_accuracy
from .bench.environment import environment
from .bench.evaluate import EvalSet, accuracy_entry, batch_size_for, reference_logits, runner_logits
from .bench.latency import measure
from .bench.parity import compare_logits
from .bench.report import REPORT_JSON, write_report
from .bundled import bundled_images, bundled_weights
from .data.images import ImageSet, Preprocess, load_batch, open_image_set
from .errors import BackendUnavailable, UserInputError, VerificationError
from .model.checkpoint import LoadedModel, load_model, metadata_json
from .outdir import commit_out, prepare_out
from .quant import checks, openvino_int8
from .quant.policy import EXACT_ON, PAIR_SAFE_WEIGHT, STATISTICS, WEIGHT_RANGES, QuantPolicy
from .rewrite import table_bytes, to_deploy
from .sizes import parse_img_size
from .targets import TARGETS, TargetSpec, require, resolve_target, target_module
from .targets.coreml import CoreMLSettings

__all__ = ["ExportOptions", "run_export", "NullProgress"]

TABLE_LIMIT = 1 << 30  # constant tables per model; ONNX files without external data stop at 2 GiB
MIN_CALIB_IMAGES = 8  # fewer gives activation ranges from a handful of images
# Verification thresholds beyond FP32's --atol: a gross-error guard on the worst per-image logit
# cosine vs PyTorch FP32. Accuracy itself is gated by --max-drop / `rmt-deploy check`.
# "bf16" is what OpenVINO computes FP16 models in on CPUs with AVX512-BF16 or AMX: 8 mantissa bits
# against FP16's 11.
MIN_COSINE = {"fp16": 0.999, "bf16": 0.98, "int8": 0.95}
SCRATCH = ".work"  # inside the private output folder: intermediate files, removed before commit
# INT8 for CPU runtimes (ONNX Runtime, OpenVINO) uses the 7-bit weight grid: exact on every CPU an
# artifact may land on, and measured as fast as 8-bit on VNNI (README "INT8 on every CPU").
CPU_WEIGHT_RANGE = "portable"


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
    # Precision flags. ONNX always writes FP32 too (the baseline every report compares to);
    # other targets write what is asked, or their default (FP16 for CoreML).
    int8: bool = False
    fp16: bool = False
    fp32: bool = False
    calib: Path | None = None  # None: bundled calib/train
    calib_size: int = 256
    max_drop: float | None = None  # top-1 points; with a labelled eval set: accuracy-aware INT8
    statistic: str = "minmax"
    coreml: CoreMLSettings = field(default_factory=CoreMLSettings)
    require_engine: bool = False  # --target trt: no GPU/TensorRT here is an error, not a skip

    def precisions_for(self, spec: TargetSpec) -> tuple[str, ...]:
        asked = tuple(p for p in ("fp32", "int8", "fp16") if getattr(self, p))
        if spec.always_fp32:
            return ("fp32",) + tuple(p for p in asked if p != "fp32")
        return asked or (spec.default_precision,)

    def needs_calibration(self, specs: list[TargetSpec]) -> bool:
        int8 = [s for s in specs if "int8" in self.precisions_for(s)]
        return any(s.calibrated_int8 or (s.name == "coreml" and self.coreml.w8a8) for s in int8)


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


def _int8_metadata(encoding: str, calib_images: int, policy: QuantPolicy) -> dict[str, str]:
    """What an INT8 artifact says about itself: how it was calibrated and where it is exact."""
    return {"quantization": f"{encoding}; {calib_images} calibration images, statistic {policy.statistic}",
            "int8_weight_bits": str(policy.weight_bits), "int8_exact_on": EXACT_ON[policy.weight_range]}


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
        raise UserInputError(f"no --target given; choose from {', '.join(TARGETS)}")
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
    if opts.statistic not in STATISTICS:
        raise UserInputError(f"--statistic {opts.statistic!r} is unknown; choose from {', '.join(STATISTICS)}")
    for spec in specs:
        for precision in opts.precisions_for(spec):
            if precision not in spec.precisions:
                raise UserInputError(f"target {spec.name} does not support {precision}; it supports "
                                     f"{', '.join(spec.precisions)}")
    if any(s.name == "coreml" for s in specs):
        opts.coreml.check(opts.precisions_for(TARGETS["coreml"]))
    elif opts.coreml != CoreMLSettings():
        raise UserInputError("--image-input, --min-target, --w8a8 and --license are CoreML options; "
                             "add --target coreml")
    # Fail before any work, with the install hint.
    if any(s.calibrated_int8 and "int8" in opts.precisions_for(s) for s in specs):
        require("nncf", "int8")
    if any(s.name == "coreml" for s in specs):
        from .targets.coreml import require_coremltools

        require_coremltools()
    if any(s.name == "openvino" for s in specs):
        require("openvino", "openvino")
    if any(s.name == "trt" for s in specs) and opts.require_engine:
        from .targets.tensorrt import engine_unavailable_reason

        reason = engine_unavailable_reason()
        if reason:
            raise BackendUnavailable(f"--require-engine: {reason}")
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
    if opts.max_drop is not None and eval_set is None:
        raise UserInputError("--max-drop needs a labelled evaluation set: pass --eval DIR with one folder per "
                             "class, matching the model's classes")
    calib = _calibration_samples(opts, pre, progress) if opts.needs_calibration(specs) else None
    if opts.dynamic_batch:
        for spec in specs:
            if not spec.dynamic_batch:
                progress.log(f"{spec.name}: batch fixed at 1 (--dynamic-batch applies to ONNX only)")
    with progress.step(f"Rewriting {loaded.variant} to deploy form at {size[0]}x{size[1]}"):
        deploy = to_deploy(loaded.model, size)

    # Class names: an explicit --label-map wins, then names stored in the checkpoint, then
    # the evaluation set's folder names.
    stored = metadata_json(loaded.checkpoint, "rmt_deploy.classes")
    folders = list(images.classes) if scored else None
    classes = folders if (opts.label_map and scored) else (stored or folders)
    metadata = _metadata(loaded, size, pre, opts.dynamic_batch, classes)
    job = _Job(opts, loaded, deploy, tmp, size, metadata, x_parity, ref_parity, eval_set, calib, progress)
    artifacts = [_run_step(spec, precision, tmp, opts.strict, job.export_and_verify)
                 for spec in specs for precision in opts.precisions_for(spec)]

    shutil.rmtree(tmp / SCRATCH, ignore_errors=True)
    trtexec = [a["trtexec"] for a in artifacts if a.get("trtexec") and a["status"] != "failed"]
    if trtexec:
        from .targets.tensorrt import write_build_script

        write_build_script(tmp, trtexec)
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


def _calibration_samples(opts: ExportOptions, pre: Preprocess, progress) -> np.ndarray:
    """Decode the calibration subset up front, so bad input fails before any export work."""
    explicit = opts.calib is not None
    root = Path(opts.calib) if explicit else bundled_images("train")
    if not explicit and not root.exists():
        raise UserInputError(f"bundled calibration images not found at {root}; pass --calib DIR")
    images = open_image_set(root).subset(opts.calib_size)
    with progress.bar(f"Reading {len(images)} calibration images", len(images)) as advance:
        samples, skipped, _ = load_batch(images, pre, advance)
    if skipped:
        shown = ", ".join(p.name for p in skipped[:5]) + (" …" if len(skipped) > 5 else "")
        progress.log(f"skipped {len(skipped)} unreadable calibration file(s): {shown}")
    if len(samples) < MIN_CALIB_IMAGES:
        raise UserInputError(f"only {len(samples)} usable calibration image(s) in {root}; INT8 needs at least "
                             f"{MIN_CALIB_IMAGES} (256 recommended)")
    if len(samples) < opts.calib_size:
        progress.log(f"calibrating on {len(samples)} images ({root} has fewer than --calib-size "
                     f"{opts.calib_size})")
    return samples


def _run_step(spec: TargetSpec, precision: str, tmp: Path, strict: bool, export_and_verify) -> dict:
    """One (target, precision) cell: its failure is recorded, and the other targets still run."""
    entry = {"target": spec.name, "precision": precision, "path": None, "size_bytes": None,
             "status": "ok", "stage": None, "reason": None, "parity": None, "accuracy": None,
             "latency_ms": None, "graph": None, "export_seconds": None}
    module = target_module(spec)
    reason = module.unavailable_reason()
    if reason:
        return {**entry, "status": "skipped", "reason": reason}
    try:
        return export_and_verify(spec, module, entry)
    except (UserInputError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 — recorded in the report unless --strict
        if strict or os.environ.get("RMT_DEPLOY_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        stem = artifact_stem(precision)
        for leftover in [*tmp.glob(f"{stem}{spec.suffix}*"), *tmp.glob(f".partial-{stem}{spec.suffix}"),
                         *(tmp.glob(f"{stem}.trt.onnx") if spec.name == "trt" else [])]:
            remove_artifact(leftover)
        return {**entry, "status": "failed", "stage": "export", "path": None, "size_bytes": None,
                "reason": f"{type(e).__name__}: {first}"}


@dataclass
class _Job:
    """Everything the per-artifact steps share; calibration runs once for all INT8 targets."""

    opts: ExportOptions
    loaded: LoadedModel
    deploy: object
    tmp: Path
    size: tuple[int, int]
    metadata: dict
    x_parity: np.ndarray
    ref_parity: np.ndarray
    eval_set: EvalSet | None
    calib: np.ndarray | None
    progress: object
    _int8: dict = field(default_factory=dict)  # weight range → Int8Models
    _calibration_graph: object = None  # FP32 token-layout ONNX both calibrations start from
    _openvino_int8: object = None  # (calibrated openvino.Model, the FP32 model it came from, seconds)
    _deploy_onnx_path: Path | None = None

    def export_and_verify(self, spec: TargetSpec, module, entry: dict) -> dict:
        if spec.name == "trt":
            return self._tensorrt(spec, module, entry)
        precision = entry["precision"]
        path = self.tmp / f"{artifact_stem(precision)}{spec.suffix}"
        start = time.perf_counter()
        metadata = {**self.metadata, "precision": precision,
                    "dynamic_batch": str(self._dynamic(spec)).lower()}
        exporter = {"coreml": self._export_coreml, "openvino": self._export_openvino}.get(spec.name, self._export_onnx)
        exporter(spec, module, entry, path, metadata)
        entry.update(path=path.name, size_bytes=artifact_bytes(path),
                     export_seconds=round(time.perf_counter() - start, 2))
        if hasattr(module, "inspect_graph"):
            with self.progress.step(f"Inspecting {spec.name}/{precision}"):
                entry["graph"] = module.inspect_graph(path)
            if entry["graph"].get("problems"):  # e.g. CoreML preflight: a tensor above rank 5
                remove_artifact(path)
                entry.update(status="failed", stage="preflight", path=None,
                             reason="; ".join(entry["graph"]["problems"]) + "; model removed")
                return entry
        self._verify(spec, module, entry, path)
        if precision == "int8" and self.opts.max_drop is not None and entry["status"] == "ok":
            if spec.calibrated_int8:
                self._fit_budget(spec, module, entry, path, metadata)
            else:
                self._gate_drop(entry, path)
        return entry

    def _dynamic(self, spec: TargetSpec) -> bool:
        return self.opts.dynamic_batch and spec.dynamic_batch

    def _export_onnx(self, spec: TargetSpec, module, entry: dict, path: Path, metadata: dict) -> None:
        precision, dynamic = entry["precision"], self._dynamic(spec)
        mode = "dynamic" if dynamic else "fixed"
        if precision == "fp32":
            with self.progress.step(f"Exporting {spec.name} FP32 ({mode} batch)"):
                module.export(self.deploy, path, self.size, dynamic_batch=dynamic, metadata=metadata)
        elif precision == "fp16":
            with self.progress.step(f"Exporting {spec.name} FP16 ({mode} batch)"):
                module.export_fp16(self.deploy, path, self.size, dynamic_batch=dynamic, metadata=metadata)
        else:
            int8 = self._calibrated(CPU_WEIGHT_RANGE)
            grid = checks.weight_grid(int8.onnxruntime)
            entry["quantization"] = self._quantization("onnxruntime", int8.calib_seconds, grid, len(int8.float_for_speed))
            metadata.update(_int8_metadata("int8 onnxruntime encoding", int8.calib_images, self._policy()))
            module.save(copy.deepcopy(int8.onnxruntime), path, metadata)

    def _tensorrt(self, spec: TargetSpec, module, entry: dict) -> dict:
        """TensorRT-ready ONNX + readiness check; the engine where TensorRT and a GPU are."""
        import onnx

        from .targets import onnx as onnx_target
        from .targets.trt_readiness import readiness, rtx_build

        precision, dynamic = entry["precision"], self._dynamic(spec)
        onnx_path = self.tmp / f"{artifact_stem(precision)}.trt.onnx"
        start = time.perf_counter()
        metadata = {**self.metadata, "precision": precision, "dynamic_batch": str(dynamic).lower(),
                    "intended_runtime": "tensorrt"}
        with self.progress.step(f"Writing the TensorRT-ready {precision.upper()} ONNX"):
            if precision == "int8":
                int8 = self._calibrated("full")  # GPUs accumulate in int32; TensorRT wants the full grid
                entry["quantization"] = self._quantization("tensorrt", int8.calib_seconds, checks.weight_grid(int8.qdq),
                                                           weight_range="full")
                metadata.update(_int8_metadata("int8 tensorrt q/dq", int8.calib_images, self._policy("full")))
                onnx_target.save(copy.deepcopy(int8.qdq), onnx_path, metadata)
            else:
                export = onnx_target.export_fp16 if precision == "fp16" else onnx_target.export
                export(self.deploy, onnx_path, self.size, dynamic_batch=dynamic, metadata=metadata)
        entry["export_seconds"] = round(time.perf_counter() - start, 2)
        with self.progress.step(f"Checking TensorRT readiness of {onnx_path.name}"):
            entry["readiness"] = readiness(onnx.load(str(onnx_path)), dynamic)
            entry["readiness"]["rtx_build"] = rtx_build(onnx_path)
        entry["onnx"] = onnx_path.name
        # The same graph run by ONNX Runtime without its int8 kernels (Q/DQ as float math, what TensorRT
        # computes): fused kernels would saturate the full 8-bit grid on x86 CPUs without VNNI.
        with onnx_target.OnnxRuntimeRunner(onnx_path, self.opts.threads, fuse_int8=False) as runner:
            entry["onnx_parity"] = compare_logits(self.ref_parity, runner_logits(
                runner, self.x_parity, dynamic, self.deploy.cfg))
        info = onnx_target.describe(onnx_path)
        entry["trtexec"] = module.trtexec_command(onnx_path.name, f"{artifact_stem(precision)}.engine", precision,
                                                  info["input_name"], info["input_shape"], module.EngineSettings())
        if entry["readiness"]["status"] != "ready":
            entry.update(status="failed", stage="readiness", reason="; ".join(entry["readiness"]["problems"])[:300])
            return entry
        reason = module.engine_unavailable_reason()
        if reason:
            entry.update(status="skipped", path=onnx_path.name, size_bytes=artifact_bytes(onnx_path),
                         reason=f"engine not built: {reason}")
            return entry
        path = self.tmp / f"{artifact_stem(precision)}{spec.suffix}"
        with self.progress.step(f"Building the TensorRT {precision.upper()} engine"):
            entry["engine"] = module.build_engine(onnx_path, path, module.EngineSettings())
        entry.update(path=path.name, size_bytes=artifact_bytes(path))
        self._verify(spec, module, entry, path)
        return entry

    def _export_coreml(self, spec: TargetSpec, module, entry: dict, path: Path, metadata: dict) -> None:
        precision, settings = entry["precision"], self.opts.coreml
        what = {"fp16": "FP16", "fp32": "FP32",
                "int8": "INT8 weights + activations" if settings.w8a8 else "INT8 weights"}[precision]
        if precision == "int8":
            entry["quantization"] = {"weights": "int8 linear symmetric, per output channel",
                                     "activations": "int8 (calibrated via predict)" if settings.w8a8 else "fp16",
                                     "calib_images": int(len(self.calib)) if settings.w8a8 else None}
            metadata["quantization"] = "int8 weights (per-channel symmetric), fp16 compute"
        entry["coreml"] = {"min_target": settings.min_target, "input": "image" if settings.image_input else "tensor"}
        with self.progress.step(f"Converting to CoreML {what} ML program ({settings.min_target}, batch 1)"):
            module.export(self.deploy, path, self.size, precision=precision, metadata=metadata, settings=settings,
                          calibration=self.calib)

    def _export_openvino(self, spec: TargetSpec, module, entry: dict, path: Path, metadata: dict) -> None:
        precision = entry["precision"]
        if precision == "int8":
            model, _, seconds = self._calibrated_openvino(module)
            entry["quantization"] = self._quantization("openvino", seconds, openvino_int8.weight_grid(model))
            metadata.update(_int8_metadata("int8 (NNCF OpenVINO backend)", len(self.calib), self._policy()))
        else:
            with self.progress.step(f"Converting to OpenVINO IR ({precision.upper()} weights)"):
                model = module.convert(self._deploy_onnx())
        module.save(model, path, metadata)

    def _deploy_onnx(self) -> Path:
        """The FP32 deploy form as ONNX for converters: the ONNX target's verified model.onnx when
        this run wrote one, else exported once into the scratch folder."""
        written = self.tmp / f"{artifact_stem('fp32')}{TARGETS['onnx'].suffix}"
        if self._deploy_onnx_path is None and written.exists():
            self._deploy_onnx_path = written
        if self._deploy_onnx_path is None:
            from .targets import onnx as onnx_target

            scratch = self.tmp / SCRATCH
            scratch.mkdir(exist_ok=True)
            with self.progress.step("Exporting the deploy form to ONNX for conversion"):
                self._deploy_onnx_path = onnx_target.export(self.deploy, scratch / "deploy.onnx", self.size,
                                                            dynamic_batch=self.opts.dynamic_batch, metadata={})
        return self._deploy_onnx_path

    def _calibrated_openvino(self, module):
        if self._openvino_int8 is None:
            from .quant.calibrate import quantize_openvino

            float_model = module.convert(self._deploy_onnx())
            with self.progress.step(f"Calibrating OpenVINO INT8 with NNCF on {len(self.calib)} images"):
                start = time.perf_counter()
                model = quantize_openvino(float_model.clone(), self.calib, self._policy())  # float_model: revert source
            self._openvino_int8 = (model, float_model, round(time.perf_counter() - start, 2))
        return self._openvino_int8

    def _policy(self, weight_range: str = CPU_WEIGHT_RANGE) -> QuantPolicy:
        return QuantPolicy(self.opts.statistic, calib_size=self.opts.calib_size, weight_range=weight_range)

    def _quantization(self, encoding: str, calib_seconds: float, grid: dict, float_for_speed: int = 0,
                      weight_range: str = CPU_WEIGHT_RANGE) -> dict:
        """The report's ``quantization`` entry: the policy, the calibration, this encoding and the
        weight grid read back from the graph. A CPU-bound graph off the 7-bit grid raises: it
        would compute wrong results on x86 CPUs without VNNI."""
        if weight_range == "portable" and grid["saturating_layers"]:
            raise VerificationError(f"{len(grid['saturating_layers'])} int8 layers have weights beyond "
                                    f"±{PAIR_SAFE_WEIGHT} (first: {grid['saturating_layers'][0]}); they would "
                                    "saturate on x86 CPUs without VNNI")
        return {**self._policy(weight_range).to_dict(), "calib_images": int(len(self.calib)),
                "calib_seconds": calib_seconds, "encoding": encoding, "float_for_speed": float_for_speed,
                "max_abs_weight": grid["max_abs"]}

    def _gate_drop(self, entry: dict, path: Path) -> None:
        """Targets without layer-wise fallback: over --max-drop fails, the model is kept."""
        drop = entry["accuracy"]["drop"]
        entry["accuracy_aware"] = {"max_drop": self.opts.max_drop, "initial_drop": drop, "reverted_layers": [],
                                   "fits": drop <= self.opts.max_drop}
        if drop > self.opts.max_drop:
            entry.update(status="failed", stage="accuracy",
                         reason=f"top-1 drop {drop:.2f} exceeds --max-drop {self.opts.max_drop:g} (this target "
                                f"has no per-layer fallback; use --fp16); kept {path.name}")

    def _calibrated(self, weight_range: str):
        """One NNCF calibration per weight grid (CPU targets: portable; TensorRT: full)."""
        if weight_range not in self._int8:
            from .quant.int8 import calibrate_int8

            bits = WEIGHT_RANGES[weight_range]
            with self.progress.step(f"Calibrating INT8 ({bits}-bit weights) with NNCF on {len(self.calib)} images"):
                if self._calibration_graph is None:
                    from .targets.onnx import export_for_calibration

                    self._calibration_graph = export_for_calibration(self.loaded.model, self.size,
                                                                     dynamic_batch=self.opts.dynamic_batch)
                # Each calibration gets its own copy: NNCF and the encoders edit graphs in place.
                self._int8[weight_range] = calibrate_int8(copy.deepcopy(self._calibration_graph), self.calib,
                                                          self._policy(weight_range))
        return self._int8[weight_range]

    def _logits(self, module, path: Path, x: np.ndarray) -> np.ndarray:
        with module.load(path, self.opts.threads) as runner:
            return runner_logits(runner, x, self.opts.dynamic_batch, self.deploy.cfg)

    def _verify(self, spec: TargetSpec, module, entry: dict, path: Path) -> None:
        opts, precision, dynamic = self.opts, entry["precision"], self._dynamic(spec)
        with module.load(path, opts.threads) as runner:
            entry["verified_with"] = runner.name
            execution = runner.execution()  # what the device really ran (e.g. bf16 on AVX512-BF16/AMX)
            if execution is not None:
                entry["execution"] = execution
            with self.progress.step(f"Verifying {spec.name}/{precision} on {len(self.x_parity)} real images"):
                entry["parity"] = compare_logits(self.ref_parity, runner_logits(
                    runner, self.x_parity, dynamic, self.deploy.cfg))
            if self.eval_set is not None:
                with self.progress.bar(f"Evaluating {spec.name}/{precision}", len(self.eval_set.images)) as advance:
                    logits = self.eval_set.logits(lambda x: runner_logits(runner, x, dynamic, self.deploy.cfg),
                                                  advance)
                entry["accuracy"] = accuracy_entry(logits, self.eval_set)
            if opts.bench_iters > 0 and not runner.measures_latency:
                entry["latency_skipped"] = module.no_runtime_reason()
            elif opts.bench_iters > 0:
                with self.progress.step(f"Timing {spec.name}/{precision} ({opts.bench_iters} runs)"):
                    feeds = {runner.input_names()[0]: self.x_parity[:1]}

                    def one_call() -> float:
                        runner.infer(feeds)
                        return runner.last_inference_s

                    lat = measure(one_call, opts.bench_warmup, opts.bench_iters)
                entry["latency_ms"] = {**lat, "runtime": runner.name,
                                       "threads": opts.threads or os.cpu_count(), "batch": 1,
                                       "device": runner.device}
        parity = entry["parity"]
        if precision == "fp32":
            if not parity["max_abs"] <= opts.atol:  # also catches NaN
                remove_artifact(path)
                entry.update(status="failed", stage="validation", path=None,
                             reason=f"max abs diff {parity['max_abs']:.3g} vs PyTorch exceeds atol {opts.atol:g}; "
                                    "model removed")
            return
        ran = (entry.get("execution") or {}).get("inference_precision")
        judged = "bf16" if precision == "fp16" and ran == "bf16" else precision
        if not parity["cosine"] >= MIN_COSINE[judged]:
            remove_artifact(path)
            entry.update(status="failed", stage="validation", path=None,
                         reason=f"worst logit cosine {parity['cosine']:.4f} vs PyTorch is below "
                                f"{MIN_COSINE[judged]} for {judged}; model removed")

    def _fit_budget(self, spec: TargetSpec, module, entry: dict, path: Path, metadata: dict) -> None:
        """Accuracy-aware INT8: revert sensitive layers until the top-1 drop fits --max-drop."""
        from .quant.accuracy_aware import fit_budget, rank_layers

        opts, eval_set = self.opts, self.eval_set
        drop = entry["accuracy"]["drop"]
        summary = {"max_drop": opts.max_drop, "initial_drop": drop, "reverted_layers": [], "fits": drop <= opts.max_drop}
        entry["accuracy_aware"] = summary
        if summary["fits"]:
            return
        model, original, reverter = self._int8_graph(spec, module, path)
        scratch = self.tmp / SCRATCH / f"candidate{spec.suffix}"
        scratch.parent.mkdir(exist_ok=True)

        def logits_of(candidate, x):
            module.save(candidate, scratch, metadata)
            return self._logits(module, scratch, x)

        layers = len(reverter.layers(model))
        with self.progress.bar(f"Ranking {layers} int8 layers by sensitivity", layers) as advance:
            ranking = rank_layers(model, original, lambda c: logits_of(c, self.x_parity), self.ref_parity, advance,
                                  reverter)

        def drop_of(candidate) -> float:
            module.save(candidate, scratch, metadata)
            with module.load(scratch, opts.threads) as runner:
                with self.progress.bar("Evaluating candidate", len(eval_set.images)) as advance:
                    logits = eval_set.logits(
                        lambda x: runner_logits(runner, x, opts.dynamic_batch, self.deploy.cfg), advance)
            return accuracy_entry(logits, eval_set)["drop"]

        result = fit_budget(model, original, drop_of, ranking, opts.max_drop, drop, self.progress.log, reverter)
        remove_artifact(scratch)
        module.save(result.model, path, metadata)
        summary.update(reverted_layers=result.reverted, fits=result.fits, final_drop=result.drop,
                       steps=result.steps, ranking=result.ranking[:10])
        entry["size_bytes"] = artifact_bytes(path)
        self._verify(spec, module, entry, path)  # the report describes the model that was kept
        if not result.fits and entry["status"] == "ok":
            entry.update(status="failed", stage="accuracy",
                         reason=f"top-1 drop {result.drop:.2f} exceeds --max-drop {opts.max_drop:g} even with "
                                f"{len(result.reverted)} layers in float; kept the best model ({path.name})")

    def _int8_graph(self, spec: TargetSpec, module, path: Path):
        """(INT8 model as written, the FP32 model it was calibrated from, its Reverter)."""
        if spec.name == "openvino":
            from .quant.openvino_int8 import OPENVINO_FQ

            return module.read_model(path), self._openvino_int8[1], OPENVINO_FQ
        import onnx

        from .quant.accuracy_aware import ONNX_QDQ

        return onnx.load(str(path)), self._int8[CPU_WEIGHT_RANGE].float_model, ONNX_QDQ
