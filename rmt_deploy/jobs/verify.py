"""Verify one written artifact against PyTorch: parity on the parity images, accuracy on the
evaluation set, latency — then judge it by the thresholds below.

An FP32 artifact must match within ``--atol``; lower precisions have a gross-error guard on
the worst per-image logit cosine. Accuracy itself is gated by ``--max-drop`` / ``rmt-deploy check``.
"""
from __future__ import annotations

from pathlib import Path

from ..bench import peak_memory
from ..bench.evaluate import accuracy_entry
from ..bench.latency import measure
from ..bench.memory import release_freed_memory
from ..bench.schema import Accuracy, Artifact, Latency, Parity, latency_entry
from ..targets import Target
from .plan import ExportOptions
from .sources import ExportSources

__all__ = ["MIN_COSINE", "INT8_TARGET_COSINE", "verify", "judge"]

# Worst per-image logit cosine vs PyTorch FP32, by the precision the device computed in. "bf16" is
# what OpenVINO computes FP16 models in on CPUs with AVX512-BF16 or AMX: 8 mantissa bits against
# FP16's 11.
MIN_COSINE = {"fp16": 0.999, "bf16": 0.98, "int8": 0.95}
# What INT8 should reach at every verified size. Below it (and above the guard), the export says where
# and how to get there, and does not fail: --min-cosine makes it a budget.
INT8_TARGET_COSINE = 0.99


def verify(target: Target, entry: Artifact, path: Path, sources: ExportSources, opts: ExportOptions,
           dynamic: bool) -> None:
    """Fill parity, accuracy, latency and what the device ran; mark the entry failed when it
    misses its threshold (the caller removes the artifact)."""
    label = f"{target.name}/{entry.precision}"
    release_freed_memory()  # the export's garbage would otherwise sit under this step's peak
    # The same values in less memory where the runtime has a way (None: check in load()'s runner).
    checker = target.check_runner(path, opts.threads)
    with checker if checker is not None else target.load(path, opts.threads) as runner:
        execution = _check(runner, entry, sources, dynamic, label)
        timed = checker is None and _latency(runner, entry, target, opts, sources, label)
    if checker is not None and opts.bench_iters > 0:
        release_freed_memory()
        with target.load(path, opts.threads) as runner:  # timed at the runtime's defaults
            timed = _latency(runner, entry, target, opts, sources, label)
    if timed:
        _memory(target, entry, path, sources, opts)
    _at_runtime_default(target, entry, path, sources, opts, dynamic)
    if entry.precision == "int8" and opts.min_cosine is None:
        _int8_target(entry, sources, label)
    failure = judge(entry.precision, entry.parity, execution, opts.atol)
    for other in entry.details.get("parity_at_sizes", []):
        failure = failure or _at_size(other, judge(entry.precision, Parity.from_dict(other), execution, opts.atol))
    if failure:
        entry.fail("validation", failure)


def _check(runner, entry: Artifact, sources: ExportSources, dynamic: bool, label: str) -> dict | None:
    """Parity at every verified size and, with ``--eval``, accuracy; returns what the device ran."""
    progress, prepared = sources.progress, sources.prepared
    entry.details["verified_with"] = runner.name
    execution = runner.execution()  # what the device really ran (e.g. bf16 on AVX512-BF16/AMX)
    if execution is not None:
        entry.details["execution"] = execution
    with progress.step(f"Verifying {label} on {len(prepared.x_parity)} real images"):
        entry.parity = Parity.from_dict(sources.parity(runner, dynamic))
    if prepared.other_sizes:
        with progress.step(f"Verifying {label} at {len(prepared.other_sizes)} other sizes"):
            entry.details["parity_at_sizes"] = sources.parity_at_other_sizes(runner, dynamic)
    eval_set = prepared.eval_set
    if eval_set is not None:
        with progress.bar(f"Evaluating {label}", len(eval_set.images)) as advance:
            logits = eval_set.logits(lambda x: sources.logits(runner, x, dynamic), advance)
        entry.accuracy = Accuracy.from_dict(accuracy_entry(logits, eval_set))
    return execution


def _latency(runner, entry: Artifact, target: Target, opts: ExportOptions, sources: ExportSources,
             label: str) -> bool:
    """Time batch 1 at every verified size (``--bench-iters``); False where nothing was timed."""
    prepared = sources.prepared
    if opts.bench_iters <= 0:
        return False
    if not runner.measures_latency:
        entry.details["latency_skipped"] = target.no_runtime_reason()
        return False
    with sources.progress.step(f"Timing {label} ({opts.bench_iters} runs)"):
        measured = _time(runner, prepared.x_parity[:1], opts)
    entry.latency_ms = Latency.from_dict(latency_entry(measured, runner, opts.threads, 1))
    if prepared.other_sizes:  # --dynamic: batch 1 at each other verified size too
        with sources.progress.step(f"Timing {label} at {len(prepared.other_sizes)} other sizes"):
            entry.details["latency_at_sizes"] = [{"size": list(size), **_time(runner, x[:1], opts)}
                                                 for size, x, _ in prepared.other_sizes]
    return True


def _time(runner, x, opts: ExportOptions) -> dict:
    feeds = {runner.input_names()[0]: x}

    def one_call() -> float:
        runner.infer(feeds)
        return runner.last_inference_s

    measured = measure(one_call, opts.bench_warmup, opts.bench_iters)
    return {**measured, **({"model": runner.last_model} if runner.last_model else {})}


def _memory(target: Target, entry: Artifact, path: Path, sources: ExportSources, opts: ExportOptions) -> None:
    """Peak memory of one image run twice in a fresh process, at the largest verified size (``bench.peak_memory``)."""
    size = max(sources.sizes, key=lambda s: (s[0] * s[1], s))
    label = f"{target.name}/{entry.precision}"
    with sources.progress.step(f"Measuring {label}'s peak memory at {size[0]}x{size[1]} in a fresh process"):
        memory = peak_memory.measure(target.name, path, size, opts.threads)
    if memory is not None:
        entry.details["memory"] = memory


def _int8_target(entry: Artifact, sources: ExportSources, label: str) -> None:
    """Record and say at which verified sizes an INT8 artifact's worst cosine is under INT8_TARGET_COSINE."""
    at = [(tuple(sources.size), entry.parity.cosine)] + [(tuple(p["size"]), p["cosine"])
                                                        for p in entry.details.get("parity_at_sizes", [])]
    missed = [(size, cosine) for size, cosine in at if cosine < INT8_TARGET_COSINE]
    entry.details.pop("int8_target", None)
    if not missed:
        return
    entry.details["int8_target"] = {"min_cosine": INT8_TARGET_COSINE,
                                    "missed": [{"size": list(s), "cosine": c} for s, c in missed]}
    where = ", ".join(f"{c:.4f} at {s[0]}x{s[1]}" for s, c in missed)
    sources.progress.log(f"{label}: worst cosine {where}, under INT8's {INT8_TARGET_COSINE} (calibrated at "
                         f"{sources.size[0]}x{sources.size[1]}); --min-cosine {INT8_TARGET_COSINE} keeps the layers "
                         f"that cost most in float, judged at every verified size")


def _at_size(parity: dict, failure: str | None) -> str | None:
    return failure and f"at {parity['size'][0]}x{parity['size'][1]}: {failure}"


def _at_runtime_default(target: Target, entry: Artifact, path: Path, sources: ExportSources, opts: ExportOptions,
                        dynamic: bool) -> None:
    """Where the runtime's defaults compute differently on this machine (OpenVINO: bf16 float layers on
    CPUs with AVX512-BF16/AMX), record the parity at those defaults beside the verified one and say so
    in one line; the artifact is judged at the setting it records (``compile_config``)."""
    runner = target.default_runner(path, opts.threads)
    if runner is None:
        return
    label = f"{target.name}/{entry.precision}"
    with runner, sources.progress.step(f"Verifying {label} at {runner.name}"):
        parity = Parity.from_dict(sources.parity(runner, dynamic))
        ran = (runner.execution() or {}).get("inference_precision")
    floor = judge(entry.precision, parity, {"inference_precision": "f32"}, opts.atol)  # the verified threshold
    entry.details["at_runtime_default"] = {"runtime": runner.name, "inference_precision": ran,
                                           "parity": parity.to_dict(), "meets_threshold": floor is None}
    recorded = entry.details.get("compile_config", {})
    config = ", ".join(f"{k}={v}" for k, v in recorded.items()) or "its recorded settings"
    sources.progress.log(f"{label}: {target.title}'s default on this CPU is {ran}: worst cosine {parity.cosine:.4f} "
                         f"vs {entry.parity.cosine:.4f} verified with {config} (recorded in the artifact)")


def judge(precision: str, parity: Parity, execution: dict | None, atol: float) -> str | None:
    """Why an artifact's parity is unacceptable, or None."""
    if precision == "fp32":
        if not parity.max_abs <= atol:  # also catches NaN
            return f"max abs diff {parity.max_abs:.3g} vs PyTorch exceeds atol {atol:g}"
        return None
    ran = (execution or {}).get("inference_precision")
    judged = "bf16" if precision == "fp16" and ran == "bf16" else precision
    if not parity.cosine >= MIN_COSINE[judged]:
        return f"worst logit cosine {parity.cosine:.4f} vs PyTorch is below {MIN_COSINE[judged]} for {judged}"
    return None
