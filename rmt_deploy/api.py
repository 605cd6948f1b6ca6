"""The Python API: the CLI's jobs as functions, and exported artifacts as models you can call.

Everything here is importable without torch or any backend; each function imports what it
needs when it is called. Errors are the package's exception types (``UserInputError`` for bad
input, ``VerificationError`` for an artifact that fails its checks, ``BackendUnavailable``),
never ``sys.exit``; nothing is printed unless ``progress=True``.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path

from .bench.schema import CheckSummary, Report
from .bench.taps import CompareResult, TapError
from .jobs.predict import Model, Prediction
from .targets import DEFAULT_TARGETS

__all__ = ["export", "load", "bench", "check", "compare", "Report", "Model", "Prediction", "CheckSummary",
           "CompareResult", "TapError"]


def _progress(progress: bool):
    from .progress import NullProgress, RichProgress

    return RichProgress(quiet=False) if progress else NullProgress()


# The arguments the caller of a ``_tracks_given`` function wrote, for the length of that call.
_GIVEN: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("rmt_deploy_given", default=frozenset())


def _tracks_given(fn):
    """Let ``fn`` read from ``_GIVEN`` which arguments its caller wrote (a preset fills the rest);
    its signature stays the one documented."""
    names = list(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _GIVEN.set(frozenset(kwargs) | frozenset(names[:len(args)]))
        try:
            return fn(*args, **kwargs)
        finally:
            _GIVEN.reset(token)

    return wrapper


@_tracks_given
def export(weights: str | Path | None = None, *, targets: Sequence[str] | str = DEFAULT_TARGETS, out: str | Path = "rmt-deploy-out",
           int8: bool = False, fp16: bool = False, fp32: bool = False, arch: str | None = None,
           img_size: str | int | tuple[int, int] | None = None, task: str = "classify",
           out_indices: str | Sequence[int] | None = None, dynamic_batch: bool = False, dynamic: bool = False,
           min_size: int | None = None, max_size: int | None = None, resize: str | None = None,
           resize_scale: str | Sequence[int] | None = None, preset: str | Path | None = None,
           eval: str | Path | None = None, label_map: str | Path | None = None, calib: str | Path | None = None,
           calib_size: int = 256, max_drop: float | None = None, min_cosine: float | None = None,
           statistic: str = "minmax", parity_samples: int = 16,
           atol: float = 1e-4, bench_iters: int = 30, threads: int | None = None, strict: bool = False,
           image_input: bool = False, min_target: str = "iOS16", w8a8: bool = False, license: str = "",
           require_engine: bool = False, delegate: str = "xnnpack",
           progress: bool = False) -> Report:
    """Export a checkpoint like ``rmt-deploy export`` and return its report.

    Keyword arguments are the CLI's flags (``--calib-size`` → ``calib_size``, ``--eval`` → ``eval``);
    ``weights=None`` uses the bundled demo checkpoint. With your own ``weights``, INT8 needs ``calib`` (a folder
    of images like those the model will see; ``"demo"``: the bundled digits, on purpose). ``task="backbone"`` exports the feature maps
    of a detection/segmentation (or classification) checkpoint's backbone. ``dynamic=True`` writes one artifact
    for every height and width from ``min_size`` to ``max_size`` (multiples of 32), verified at both ends and at
    ``img_size``; ``resize="mmdet"`` (backbones, with ``dynamic``) records mmdet's own test resize, which
    ``load`` then applies to each image. With ``preset``, the preset's values apply
    to every argument not passed (``int8=False`` turns a preset's INT8 off, like ``--no-int8``).
    The report is also written to ``out``.

    Returns:
        The report (``report.ok``, ``report.artifacts[i].parity.cosine``, ``report.report_path``).

    Raises:
        UserInputError: bad checkpoint, size, target or folder (nothing written).
        VerificationError: an artifact failed; the report is written and attached as ``.report``.
    """
    from .errors import VerificationError
    from .jobs.export import run_export
    from .jobs.plan import options_from_flags

    flags = dict(weights=weights, targets=targets, out=out, int8=int8, fp16=fp16, fp32=fp32, arch=arch,
                 img_size=img_size, task=task, out_indices=out_indices, dynamic_batch=dynamic_batch, dynamic=dynamic,
                 min_size=min_size, max_size=max_size, resize=resize, resize_scale=resize_scale, eval_dir=eval,
                 label_map=label_map, calib=calib, calib_size=calib_size, max_drop=max_drop, min_cosine=min_cosine,
                 statistic=statistic, parity_samples=parity_samples, atol=atol, bench_iters=bench_iters, threads=threads, strict=strict, image_input=image_input,
                 min_target=min_target, w8a8=w8a8, license=license, require_engine=require_engine, delegate=delegate)
    given = {_FIELD.get(name, name) for name in _GIVEN.get()}  # what the caller wrote wins over a preset
    opts = options_from_flags(flags, preset, given)
    written = Path(opts.out) / "report.json"
    before = written.stat().st_mtime_ns if written.exists() else None
    try:
        run_export(opts, _progress(progress))
        return Report.read(written)  # what was written, key for key
    except VerificationError as e:
        # The failed entries with their reasons, when this run wrote a report (not with --strict).
        if written.exists() and written.stat().st_mtime_ns != before:
            e.report = Report.read(written)
        raise


_FIELD = {"eval": "eval_dir"}  # this function's keyword → ExportOptions field


def load(path: str | Path, *, runtime: str | None = None, threads: int | None = None, preprocess=None,
         execution: str = "verified") -> Model:
    """An exported artifact as a model: any file a target writes (ONNX, OpenVINO IR, TensorRT engine, Core ML
    package, ExecuTorch program, LiteRT model, MNN model; ``rmt_deploy.targets.TARGETS``), by its suffix.

    Preprocessing (input size, resize/crop, mean/std) is read from the artifact's metadata;
    pass ``preprocess`` (a ``data.images.Preprocess``) for artifacts rmt-deploy did not write.
    ``execution="default"`` compiles with the runtime's own defaults instead of the settings the
    artifact was verified with (OpenVINO IRs: bf16 float layers on CPUs with AVX512-BF16/AMX).
    """
    return Model.open(Path(path), runtime=runtime, threads=threads, preprocess=preprocess,
                      execution=str(execution).strip().lower())


def bench(artifacts: Iterable[str | Path] | str | Path = (), *, from_dir: str | Path | None = None,
          batch: Sequence[int] | int = (1,),
          threads: int | None = None, iters: int = 30, min_time: float = 1.0, warmup: int = 5,
          eval: str | Path | None = None, out: str | Path = "rmt-deploy-bench", reference: bool = True,
          device: str | None = None, hint: str = "latency", execution: str = "verified",
          progress: bool = False) -> Report:
    """Benchmark artifacts like ``rmt-deploy bench`` and return the report (also written);
    ``execution`` as in ``load``."""
    from .jobs.bench import BenchOptions, parse_batches, run_bench

    artifacts = [artifacts] if isinstance(artifacts, (str, Path)) else artifacts
    batch = [batch] if isinstance(batch, int) else batch
    opts = BenchOptions(artifacts=tuple(Path(a) for a in artifacts), from_dir=Path(from_dir) if from_dir else None,
                        batches=parse_batches(",".join(str(b) for b in batch)), threads=threads, min_iters=iters,
                        min_seconds=min_time, warmup=warmup, eval_dir=Path(eval) if eval else None, out=Path(out),
                        reference=reference, device=device, hint=str(hint).strip().lower(),
                        execution=str(execution).strip().lower())
    run_bench(opts, _progress(progress))
    return Report.read((Path(from_dir) if from_dir else Path(out)) / "report.json")


def check(report: str | Path, *, baseline: str | Path | None = None, max_drop: float = 0.5,
          max_latency_regression: float = 0.15, min_cosine: float | None = None,
          config: str | Path | None = None, taps_baseline: str | Path | None = None) -> CheckSummary:
    """Gate on a report like ``rmt-deploy check``: ``.passed`` and one result per check.

    ``min_cosine``: the worst per-image cosine each output (feature map, or logits) must reach.
    ``taps_baseline``: a compare.json from a known-good run; the compare.json beside ``report``
    must not be worse at any tap (``bench.taps.check_taps``).
    """
    from .bench.check import Limits, check_report, load_limits, read_report
    from .bench.taps import taps_checks

    current = read_report(Path(report))
    base = read_report(Path(baseline), "baseline") if baseline else None
    results = check_report(current, base, load_limits(Path(config) if config else None,
                                                      Limits(max_drop, max_latency_regression, min_cosine)))
    if taps_baseline:
        results += taps_checks(Path(report), Path(taps_baseline))
    return CheckSummary(results)


def compare(artifacts: str | Path | Sequence[str | Path], *, weights: str | Path | None = None, images=None,
            samples: int = 8, level: str = "block", isolate: bool = False, worst: int = 5,
            out: str | Path | None = None, threads: int | None = None, write: bool = True,
            progress: bool = False) -> CompareResult | list[CompareResult]:
    """Per-tap errors of artifacts against PyTorch, like ``rmt-deploy compare``.

    ``images``: a folder or .txt list of image files (default: the bundled set), or a preprocessed
    float32 array (N, 3, H, W) at the artifact's input size. ``write=False`` writes no compare.json /
    compare.png. Returns one ``CompareResult`` for one path, a list for several
    (``result.first_divergence``, ``result.tap("stages.2.blocks.1").rel_l2``, ``result.to_dict()``).
    """
    from .jobs.compare import CompareOptions, run_compare

    single = isinstance(artifacts, (str, Path))
    paths = (artifacts,) if single else tuple(artifacts)
    opts = CompareOptions(tuple(Path(a) for a in paths), weights=Path(weights) if weights else None,
                          images=Path(images) if isinstance(images, (str, Path)) else images, samples=samples,
                          level=str(level).strip().lower(), isolate=isolate, worst=worst,
                          out=Path(out) if out else None, threads=threads, write=write)
    results = run_compare(opts, _progress(progress))
    return results[0] if single else results
