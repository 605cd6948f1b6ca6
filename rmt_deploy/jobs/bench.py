"""`rmt-deploy bench`: latency across batch and input sizes (and accuracy) for exported artifacts.

Artifacts come from an export folder (``--from``: its report.json is updated in place) or
as files (a new report in ``--out``). Each (artifact, size, batch) cell is measured on its own:
a failure is recorded with its reason and the rest still run. The PyTorch reference is
timed last, because its OpenMP threads keep spinning after each call and would slow the
runtime measured next.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import artifact_bytes
from ..cpu import usable_cores
from ..bench import peak_memory
from ..bench.environment import environment
from ..bench.evaluate import EvalSet, accuracy_entry, batch_size_for, reference_logits, runner_logits
from ..bench.latency import measure
from ..bench.memory import peak_rss_bytes, reset_peak_rss
from ..bench.portability import int8_cpu_warning
from ..bench.report import write_report
from ..bench.schema import Accuracy, Artifact, Latency, failure_reason, latency_entry, stamp
from ..data.images import Preprocess, open_image_set
from ..errors import UserInputError
from ..model.variants import VARIANTS
from ..outdir import REPORT_JSON, rewriting, writing
from ..sizes import InputSizes
from ..targets import TARGETS, Target, check_execution, target_for_path
from ..targets.openvino import HINTS, check_device

__all__ = ["BenchOptions", "run_bench", "parse_batches"]

MAX_BATCH = 1024


@dataclass
class BenchOptions:
    artifacts: tuple[Path, ...] = ()
    from_dir: Path | None = None
    batches: tuple[int, ...] = (1,)
    sizes: tuple[tuple[int, int], ...] = ()  # input (H, W) to time besides the verified size (--size)
    threads: int | None = None  # None: all cores
    min_iters: int = 30
    min_seconds: float = 1.0
    warmup: int = 5
    eval_dir: Path | None = None
    out: Path = Path("rmt-deploy-bench")
    reference: bool = True  # also time the PyTorch reference when its checkpoint is known
    device: str | None = None  # OpenVINO device (CPU, GPU, NPU, AUTO …); None: every device here
    hint: str = "latency"  # OpenVINO performance hint; "throughput" also measures async images/s
    execution: str = "verified"  # targets.EXECUTIONS: the artifact's verified compile settings, or the runtime's


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise UserInputError(f"--batch '{text}' must be comma-separated integers, e.g. 1,8,32") from None
    if not batches or any(b < 1 or b > MAX_BATCH for b in batches):
        raise UserInputError(f"--batch '{text}': each batch size must be between 1 and {MAX_BATCH}")
    return tuple(sorted(set(batches)))


def _from_export(folder: Path) -> tuple[dict, Path]:
    path = folder / REPORT_JSON
    if not path.exists():
        raise UserInputError(f"--from {folder}: no {REPORT_JSON}; point it at an rmt-deploy export folder")
    try:
        return json.loads(path.read_text()), folder
    except ValueError as e:
        raise UserInputError(f"{path} is not valid JSON ({e})") from None


def _from_files(paths: tuple[Path, ...]) -> dict:
    artifacts, model = [], None
    for path in paths:
        if not path.is_file():
            raise UserInputError(f"artifact not found: {path}")
        target = target_for_path(path)
        entry = Artifact(target.name, "fp32", str(path.resolve()), artifact_bytes(path)).to_dict()
        artifacts.append(entry)
        try:
            info = target.describe(path)
        except Exception as e:  # noqa: BLE001 — a damaged artifact is a failed cell, not a crash
            entry.update(_failed(None, e), status="failed", stage="load")
            del entry["batch"]
            continue
        meta = info["metadata"]
        entry["precision"] = meta.get("precision", "fp32")
        if model is None:
            model = {
                "variant": meta.get("arch"),
                "num_classes": int(meta["num_classes"]) if meta.get("num_classes") else None,
                "input_size": [int(v) for v in meta["input_size"].split("x")] if meta.get("input_size")
                else info["input_shape"][2:],
                "dynamic_batch": info["dynamic_batch"],
                "checkpoint": None,
                "preprocess": {"mean": json.loads(meta["mean"]), "std": json.loads(meta["std"]),
                               "crop_pct": float(meta.get("crop_pct", 0.875))} if meta.get("mean") else None,
            }
    if model is None:
        raise UserInputError("none of the artifacts could be read: "
                             + "; ".join(f"{a['path']}: {a['reason']}" for a in artifacts))
    return {"model": model, "artifacts": artifacts}


def run_bench(opts: BenchOptions, progress) -> dict:
    """Measure every (artifact, batch) cell; write the report; return it."""
    if bool(opts.artifacts) == bool(opts.from_dir):
        raise UserInputError("give artifact files or --from OUTDIR (one of the two)")
    if opts.min_iters < 1 or opts.warmup < 0 or opts.min_seconds < 0:
        raise UserInputError("--iters must be at least 1, --warmup and --min-time at least 0")
    if opts.threads is not None and opts.threads < 1:
        raise UserInputError("--threads must be at least 1")
    if opts.hint not in HINTS:
        raise UserInputError(f"--hint {opts.hint!r} is unknown; choose latency or throughput")
    check_execution(opts.execution)
    check_device(opts.device)
    if opts.from_dir:
        report, folder = _from_export(opts.from_dir)
        base = folder
    else:
        report, folder, base = _from_files(opts.artifacts), None, Path.cwd()
    model = report["model"]
    size = tuple(model["input_size"])
    sizes = tuple(dict.fromkeys((size, *opts.sizes)))  # the verified size first: each artifact's latency_ms
    if opts.sizes:
        _check_sizes(report["artifacts"], base, opts.sizes)
    # Evaluation batches are sized from the attention footprint; artifacts without our
    # metadata get the largest official variant's estimate (the most conservative).
    cfg = VARIANTS.get(model.get("variant") or "", VARIANTS["rmt-l"])
    eval_set, ref_model = _prepare_eval(opts, model, cfg, progress)

    for entry in report["artifacts"]:
        if entry["status"] != "ok" or not entry.get("path"):
            continue
        _bench_artifact(entry, _path(entry, base), size, sizes, cfg, opts, eval_set, progress)
    report["reference_runs"] = (_bench_reference(ref_model, size, sizes, opts, eval_set, progress)
                                if opts.reference else [])

    report.update(**stamp(), environment=environment(),
                  bench={"batches": list(opts.batches), "sizes": [list(s) for s in sizes],
                         "threads": opts.threads or usable_cores(),
                         "min_iters": opts.min_iters, "min_seconds": opts.min_seconds, "warmup": opts.warmup})
    report.setdefault("verification", None)
    if eval_set is not None:
        report["verification"] = {**(report.get("verification") or {}), "images": str(eval_set.images.root),
                                  "eval_samples": int(len(eval_set.labels)),
                                  "skipped_images": [str(p) for p in eval_set.skipped]}
    # The whole folder is swapped in at once: a reader or a kill sees the old report or the new one
    with (rewriting(folder) if folder is not None else writing(opts.out)) as tmp:
        write_report(tmp, report)
    return report


def _path(entry: dict, base: Path) -> Path:
    return Path(entry["path"]) if Path(entry["path"]).is_absolute() else base / entry["path"]


def _check_sizes(artifacts: list[dict], base: Path, sizes) -> None:
    """Every --size must be one each artifact takes (its range, enumerated sizes or its one size)."""
    for entry in artifacts:
        if entry["status"] != "ok" or not entry.get("path"):
            continue
        path = _path(entry, base)
        try:
            info = TARGETS[entry["target"]].describe(path)
        except Exception:  # noqa: BLE001 — recorded as a failed cell when it is benchmarked
            continue
        taken = InputSizes.of(info["metadata"], tuple(info["input_shape"][2:]))
        fix = ("widen the range when you export (--min-size/--max-size)" if taken.size_range and not taken.enumerated
               else "a Core ML package takes only these; time other sizes on another target" if taken.enumerated
               else "export with --dynamic (and --min-size/--max-size around them) to time other sizes")
        for size in sizes:
            taken.check(size, f"--size for {path.name}", fix)


def _prepare_eval(opts: BenchOptions, model: dict, cfg, progress):
    """The PyTorch reference (when its checkpoint is known) and the evaluation set, if asked."""
    from ..model.checkpoint import load_model

    ref_model = None
    checkpoint = model.get("checkpoint")
    if checkpoint and Path(checkpoint).exists():
        with progress.step(f"Loading reference {Path(checkpoint).name}"):
            ref_model = load_model(checkpoint, model.get("variant")).model
    if opts.eval_dir is None:
        return None, ref_model
    images = open_image_set(opts.eval_dir)
    classes = model.get("num_classes")
    if images.classes is None or (classes and len(images.classes) != classes):
        raise UserInputError(f"--eval {opts.eval_dir} needs one class folder per model class "
                             f"({classes}); found {len(images.classes or ())}")
    pp = model.get("preprocess") or {}
    pre = Preprocess(tuple(model["input_size"]), crop_pct=pp.get("crop_pct", 0.875),
                     **({"mean": tuple(pp["mean"]), "std": tuple(pp["std"])} if pp.get("mean") else {}))
    eval_set = EvalSet(images, pre, batch_size_for(cfg, pre.size))
    if ref_model is not None:
        with progress.bar("PyTorch FP32 reference on the evaluation set", len(images)) as advance:
            eval_set.reference = eval_set.logits(lambda x: reference_logits(ref_model, x), advance)
    return eval_set, ref_model


def _bench_artifact(entry: dict, path: Path, size, sizes, cfg, opts: BenchOptions, eval_set, progress) -> None:
    """Every runtime the target offers here (e.g. ONNX Runtime CPU and CUDA) × every size × every batch;
    the artifact's ``latency_ms`` is batch 1 at ``size``, the size it was verified at."""
    target = TARGETS[entry["target"]]
    entry["benchmarks"] = cells = []
    try:
        info = target.describe(path)
        runtimes = target.runtimes(opts.device)
        warning = int8_cpu_warning(path, target, metadata=info.get("metadata") or {})
    except Exception as e:  # noqa: BLE001 — one broken artifact must not stop the matrix
        cells.extend({**_failed(b, e), "size": list(s)} for s in sizes for b in opts.batches)
        return
    if warning:
        entry["cpu_warning"] = warning
        progress.log(warning)
    if not runtimes:  # e.g. CoreML off macOS
        reason = target.no_runtime_reason()
        cells.extend({"batch": b, "size": list(s), "runtime": "none here", "status": "skipped", "stage": None,
                      "reason": reason} for s in sizes for b in opts.batches)
    for i, runtime in enumerate(runtimes):
        first = i == 0  # accuracy, load time and memory are reported for the first runtime
        _bench_runtime(entry, target, path, runtime, info, sizes, cfg, opts, eval_set if first else None,
                       first, progress)
    ok1 = next((c for c in cells if c["batch"] == 1 and c["size"] == list(size) and c["status"] == "ok"), None)
    if ok1:
        entry["latency_ms"] = ok1["latency_ms"]


def _bench_runtime(entry, target: Target, path: Path, runtime: str, info: dict, sizes, cfg, opts: BenchOptions,
                   eval_set, first: bool, progress) -> None:
    cells = entry["benchmarks"]
    try:
        reset_peak_rss()
        start = time.perf_counter()
        runner = target.load(path, opts.threads, runtime, hint=opts.hint, execution=opts.execution)
        runner.activate()
        load_seconds = round(time.perf_counter() - start, 3)
    except Exception as e:  # noqa: BLE001
        cells.extend({**_failed(b, e), "size": list(s), "runtime": runtime} for s in sizes for b in opts.batches)
        return
    try:
        fixed = None if info["dynamic_batch"] else info["input_shape"][0]
        for size in sizes:
            for batch in opts.batches:
                cells.append(_bench_cell(entry, runner, info, size, batch, fixed, opts, progress))
        if eval_set is not None:
            with progress.bar(f"Evaluating {entry['target']}/{entry['precision']}", len(eval_set.images)) as advance:
                logits = eval_set.logits(lambda x: runner_logits(runner, x, fixed is None, cfg), advance)
            entry["accuracy"] = (accuracy_entry(logits, eval_set) if eval_set.reference is not None
                                 else _plain_accuracy(logits, eval_set))
        execution = runner.execution()
        if execution is not None:
            entry.setdefault("execution_by_runtime", {})[runtime] = execution
        if first:
            peak = peak_rss_bytes()
            entry["load_seconds"] = load_seconds
            entry["peak_rss_mb"] = round(peak / 2**20, 1) if peak else None
    finally:
        runner.deactivate()
    if first:  # what one image needs, in a process that holds nothing else
        big = max(sizes, key=lambda s: (s[0] * s[1], tuple(s)))
        with progress.step(f"Peak memory of {entry['target']}/{entry['precision']} at {big[0]}x{big[1]} "
                           "in a fresh process"):
            entry["memory"] = peak_memory.measure(target.name, path, tuple(big), opts.threads)


def _bench_cell(entry, runner, info, size, batch: int, fixed: int | None, opts: BenchOptions, progress) -> dict:
    cell = {"batch": batch, "size": list(size), "runtime": runner.name, "status": "ok", "stage": None, "reason": None}
    if fixed is not None and batch != fixed:
        return {**cell, "status": "skipped",
                "reason": f"model has a fixed batch of {fixed}; export with --dynamic-batch"}
    feeds = {info["input_name"]: np.random.default_rng(0).standard_normal((batch, 3, *size), np.float32)}

    def call() -> float:
        runner.infer(feeds)
        return runner.last_inference_s

    try:
        with progress.step(f"Timing {entry['target']}/{entry['precision']} on {runner.name}, "
                           f"{size[0]}x{size[1]} batch {batch}"):
            lat = measure(call, opts.warmup, opts.min_iters, opts.min_seconds)
        cell["throughput"] = round(batch * 1000.0 / lat["p50"], 2)
        if opts.hint == "throughput":  # parallel requests, not 1 / latency
            with progress.step(f"Async throughput of {entry['target']}/{entry['precision']}, batch {batch}"):
                parallel = runner.throughput(feeds, max(opts.min_seconds, 1.0))
            if parallel is None:
                cell["async_skipped"] = f"{runner.name} runs one request at a time (--hint throughput is for OpenVINO)"
            else:
                cell["async"], cell["throughput"] = parallel, parallel["images_per_s"]
    except Exception as e:  # noqa: BLE001
        return {**cell, **_failed(batch, e)}  # keeps the cell's size
    return {**cell, "latency_ms": latency_entry(lat, runner, opts.threads, batch)}


def _plain_accuracy(logits: np.ndarray, eval_set: EvalSet) -> dict:
    from ..bench.accuracy import topk_accuracy

    return {**topk_accuracy(logits, eval_set.labels), "top1_fp32": None, "drop": None, "agreement": None,
            "samples": int(len(eval_set.labels))}


def _failed(batch: int, e: BaseException) -> dict:
    return {"batch": batch, "status": "failed", "stage": "benchmark", "reason": failure_reason(e)}


def _bench_reference(model, size, sizes, opts: BenchOptions, eval_set, progress) -> list[dict]:
    if model is None:
        return []
    import torch

    torch.set_num_threads(opts.threads or usable_cores())
    cells = []
    for shape, batch in ((s, b) for s in sizes for b in opts.batches):
        def call(x=torch.randn(batch, 3, *shape)) -> None:
            with torch.inference_mode():
                model(x)

        try:
            with progress.step(f"Timing PyTorch reference {shape[0]}x{shape[1]} batch {batch}"):
                lat = measure(call, opts.warmup, opts.min_iters, opts.min_seconds)
            cells.append({"batch": batch, "size": list(shape), "status": "ok", "stage": None, "reason": None,
                          "runtime": f"pytorch {torch.__version__} eager",
                          "latency_ms": {**lat, "runtime": f"pytorch {torch.__version__} eager",
                                         "device": "cpu", "threads": opts.threads or usable_cores(),
                                         "batch": batch},
                          "throughput": round(batch * 1000.0 / lat["p50"], 2)})
        except Exception as e:  # noqa: BLE001
            cells.append({**_failed(batch, e), "size": list(shape)})
    accuracy = None
    if eval_set is not None and eval_set.reference is not None:
        accuracy = accuracy_entry(eval_set.reference, eval_set)
    ok1 = next((c for c in cells if c["batch"] == 1 and c["size"] == list(size) and c["status"] == "ok"), None)
    entry = Artifact("pytorch", "fp32", accuracy=Accuracy.from_dict(accuracy),
                     latency_ms=Latency.from_dict(ok1["latency_ms"]) if ok1 else None, details={"benchmarks": cells})
    return [entry.to_dict()]
