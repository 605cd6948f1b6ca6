"""The report schema (docs/reference/report.md) in code: the types export and bench write and the Python API
returns.

``report.json`` stays plain JSON. Each type reads its block with ``from_dict`` and writes it with
``to_dict``; keys it does not know (target-specific fields, newer versions) are kept, so
``Report.from_dict(d).to_dict() == d``.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..cpu import usable_cores
from ..version import __version__

__all__ = ["Artifact", "Parity", "Accuracy", "Latency", "Report", "CheckSummary", "latency_entry", "failure_reason",
           "stamp"]


def _declared(cls) -> list[str]:
    return [f.name for f in fields(cls) if f.name not in ("extra", "details", "keys", "report_path")]


def _as_read(values: dict, keys: tuple[str, ...] | None) -> dict:
    """``values`` with the keys a block was read with first (in their order), then every key set
    since; a declared field still None that the file did not have stays out."""
    if keys is None:
        return values
    ordered = {k: values[k] for k in keys if k in values}
    ordered.update({k: v for k, v in values.items() if k not in ordered and v is not None})
    return ordered


class _Block:
    """A report block with typed fields. Keys this version does not know are kept in ``extra``,
    and a block read from a file writes back exactly the keys it was read with, so
    ``from_dict(d).to_dict() == d``."""

    @classmethod
    def from_dict(cls, data: dict | None):
        if data is None:
            return None
        names = set(_declared(cls))
        return cls(**{k: v for k, v in data.items() if k in names},
                   extra={k: v for k, v in data.items() if k not in names}, keys=tuple(data))

    def to_dict(self) -> dict:
        return _as_read({**{k: getattr(self, k) for k in _declared(type(self))}, **self.extra}, self.keys)


@dataclass
class Parity(_Block):
    """Artifact logits (``bench.parity.compare_logits``) or feature maps (``compare_features``) vs
    PyTorch FP32 on the parity images.

    Attributes:
        max_abs: Largest absolute difference from PyTorch FP32 over every image and output value.
        mean_abs: Mean absolute difference from PyTorch FP32.
        cosine: Worst per-image cosine similarity of the logits (backbones: of the worst feature map).
        top1_agreement: Share of parity images whose top-1 class equals PyTorch FP32's (0–1).
        samples: Number of parity images compared.
        logit_scale: Largest absolute PyTorch logit, the scale ``max_abs`` is measured against.
        outputs: Backbones only: each feature map's own figures, by output name; the fields above
            hold the worst of them.
        extra: Keys of the block that this version does not know, kept as read.
    """

    max_abs: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None  # worst per-image logit cosine
    top1_agreement: float | None = None
    samples: int | None = None
    logit_scale: float | None = None
    outputs: dict | None = None  # backbones: each feature map's own figures (the fields above: the worst)
    extra: dict = field(default_factory=dict)
    keys: tuple[str, ...] | None = field(default=None, repr=False)  # as read; None: every field


@dataclass
class Accuracy(_Block):
    """Top-k on the evaluation set, in percent; drop in points vs PyTorch FP32.

    Attributes:
        top1: The artifact's top-1 accuracy, in percent.
        top5: The artifact's top-5 accuracy, in percent.
        top1_fp32: PyTorch FP32's top-1 accuracy on the same images, in percent.
        top5_fp32: PyTorch FP32's top-5 accuracy on the same images, in percent.
        drop: ``top1_fp32 - top1``, in points (positive: the artifact is worse).
        agreement: Share of images whose top-1 class equals PyTorch FP32's (0–1).
        samples: Number of evaluation images.
        extra: Keys of the block that this version does not know, kept as read.
    """

    top1: float | None = None
    top5: float | None = None
    top1_fp32: float | None = None
    top5_fp32: float | None = None
    drop: float | None = None
    agreement: float | None = None  # share of images whose top-1 equals FP32's
    samples: int | None = None
    extra: dict = field(default_factory=dict)
    keys: tuple[str, ...] | None = field(default=None, repr=False)  # as read; None: every field


@dataclass
class Latency(_Block):
    """Milliseconds of the backend call (``bench.latency.measure``) and what ran it.

    Attributes:
        p50: Median latency of the timed runs, in milliseconds.
        p90: 90th percentile, in milliseconds.
        p99: 99th percentile, in milliseconds.
        mean: Mean latency, in milliseconds.
        std: Standard deviation, in milliseconds.
        cv: Coefficient of variation (``std / mean``).
        noisy: True when ``cv`` exceeded 10 %: the machine was busy; report.md marks it ``⚠ noisy``.
        iterations: Number of timed runs.
        warmup: Number of untimed warm-up runs before them.
        runtime: What ran the artifact (e.g. ``onnxruntime CPUExecutionProvider``).
        device: The device it ran on, where the runtime has devices (OpenVINO, Core ML compute units).
        threads: Runtime threads.
        batch: Batch size of each call.
        extra: Keys of the block that this version does not know, kept as read.
    """

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    std: float | None = None
    cv: float | None = None
    noisy: bool | None = None
    iterations: int | None = None
    warmup: int | None = None
    runtime: str | None = None
    device: str | None = None
    threads: int | None = None
    batch: int | None = None
    extra: dict = field(default_factory=dict)
    keys: tuple[str, ...] | None = field(default=None, repr=False)  # as read; None: every field


@dataclass
class Artifact:
    """One (target, precision) artifact: where it is, whether it is good, and its numbers.

    ``status`` is ok / skipped / failed; ``stage`` says where a failure happened (export,
    preflight, readiness, validation, accuracy, load, benchmark). ``details`` holds what only
    some targets have (quantization, readiness, execution …); ``to_dict`` puts them beside the
    common keys.

    Read from a report file, ``path`` is absolute (resolved against the report's ``folder``), so
    ``rmt_deploy.load(artifact.path)`` works from any working directory; ``to_dict`` writes it
    relative to ``folder`` again, so report.json stays relocatable with its artifacts.

    Attributes:
        target: The target that wrote it (``onnx``, ``openvino`` …).
        precision: ``fp32``, ``fp16`` or ``int8``.
        path: The artifact file (absolute when read from a report file); None if nothing was written.
        size_bytes: Size on disk, in bytes.
        status: ``ok``, ``skipped`` or ``failed``.
        stage: Where a failure happened (``export``, ``inspection``, ``preflight``, ``readiness``,
            ``validation``, ``accuracy``, ``load``, ``benchmark``).
        reason: Why it failed or was skipped, in one line.
        parity: Its outputs against PyTorch FP32 on the parity images.
        accuracy: Top-k on the evaluation set, when the set has labels the model knows.
        latency_ms: Batch-1 latency (also ``latency``).
        graph: Structure facts about the file (ops, opset, node count …), by target.
        export_seconds: Wall time of writing the artifact.
        details: Target-specific entries (``quantization``, ``readiness``, ``execution`` …).
        folder: The report's folder, when read from a file.
    """

    target: str
    precision: str
    path: str | None = None
    size_bytes: int | None = None
    status: str = "ok"
    stage: str | None = None
    reason: str | None = None
    parity: Parity | None = None
    accuracy: Accuracy | None = None
    latency_ms: Latency | None = None
    graph: dict | None = None
    export_seconds: float | None = None
    details: dict = field(default_factory=dict)
    keys: tuple[str, ...] | None = field(default=None, repr=False)  # as read; None: every field
    folder: Path | None = field(default=None, repr=False)  # the report's folder, when read from a file

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, stage: str, reason: str) -> None:
        self.status, self.stage, self.reason = "failed", stage, reason

    def skip(self, reason: str) -> None:
        self.status, self.reason = "skipped", reason

    @property
    def latency(self) -> Latency | None:
        """Batch-1 latency (``latency_ms`` in report.json)."""
        return self.latency_ms

    def to_dict(self) -> dict:
        common = {k: getattr(self, k) for k in _ARTIFACT_KEYS}
        for k in ("parity", "accuracy", "latency_ms"):
            common[k] = common[k].to_dict() if common[k] is not None else None
        if self.folder is not None and common["path"] and Path(common["path"]).is_relative_to(self.folder):
            common["path"] = str(Path(common["path"]).relative_to(self.folder))
        return _as_read({**common, **self.details}, self.keys)

    @classmethod
    def from_dict(cls, data: dict, folder: Path | None = None) -> Artifact:
        """One artifact entry; with ``folder`` (absolute), a relative ``path`` is resolved against it."""
        typed = {"parity": Parity, "accuracy": Accuracy, "latency_ms": Latency}
        values = {k: (typed[k].from_dict(data.get(k)) if k in typed else data.get(k)) for k in _ARTIFACT_KEYS}
        if folder is not None and values["path"]:
            values["path"] = str(folder / values["path"])  # an absolute path stays as it is
        return cls(**values, details={k: v for k, v in data.items() if k not in _ARTIFACT_KEYS}, keys=tuple(data),
                   folder=folder)


_ARTIFACT_KEYS = ("target", "precision", "path", "size_bytes", "status", "stage", "reason", "parity", "accuracy",
                  "latency_ms", "graph", "export_seconds")


@dataclass
class Report:
    """A whole report.json: the model, how it was verified, every artifact, the machine.

    ``ok`` is False when any artifact failed; ``report_path`` is where it was read or written.

    Attributes:
        artifacts: One entry per (target, precision), in the order they were written.
        model: The model: ``variant``, ``input_size``, classes, preprocessing, checkpoint sha256 ….
        verification: How the artifacts were verified: images, tolerances, cosine limits.
        environment: The machine and the versions: CPU and its features, OS, Python, packages.
        tool_version: The rmt-deploy version that wrote the report.
        created: When it was written (ISO 8601, UTC).
        extra: Other top-level keys (``schema_version``, ``bench``, ``reference_runs`` …).
        report_path: Where the report was read from or written to.
    """

    artifacts: list[Artifact]
    model: dict
    verification: dict | None = None
    environment: dict | None = None
    tool_version: str | None = None
    created: str | None = None
    extra: dict = field(default_factory=dict)  # schema_version, bench, reference_runs …
    report_path: Path | None = None
    keys: tuple[str, ...] | None = field(default=None, repr=False)  # as read; None: every field

    @property
    def ok(self) -> bool:
        return not any(a.status == "failed" for a in self.artifacts)

    def artifact(self, target: str, precision: str) -> Artifact:
        """The artifact for (target, precision), e.g. ``report.artifact("onnx", "int8")``."""
        for a in self.artifacts:
            if a.target == target and a.precision == precision:
                return a
        raise KeyError(f"no {target}/{precision} artifact in this report")

    def to_dict(self) -> dict:
        head = {k: getattr(self, k) for k in ("tool_version", "created")}
        values = {**head, "model": self.model, "verification": self.verification,
                  "artifacts": [a.to_dict() for a in self.artifacts], "environment": self.environment, **self.extra}
        return _as_read(values, self.keys)

    @classmethod
    def from_dict(cls, data: dict, report_path: Path | None = None) -> Report:
        """A report dict; with ``report_path``, artifact paths are resolved against its folder."""
        known = ("artifacts", "model", "verification", "environment", "tool_version", "created")
        folder = Path(report_path).resolve().parent if report_path is not None else None
        return cls([Artifact.from_dict(a, folder) for a in data["artifacts"]], data.get("model") or {},
                   data.get("verification"), data.get("environment"), data.get("tool_version"), data.get("created"),
                   {k: v for k, v in data.items() if k not in known}, report_path, tuple(data))

    @classmethod
    def read(cls, path: Path) -> Report:
        """A report.json file (UserInputError for a missing file, bad JSON or no artifacts list)."""
        from ..errors import UserInputError

        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise UserInputError(f"cannot read report {path}: {e.strerror or e}") from None
        except ValueError as e:
            raise UserInputError(f"report {path} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
            raise UserInputError(f"{path} is not an rmt-deploy report (no 'artifacts' list)")
        return cls.from_dict(data, path.resolve())


@dataclass
class CheckSummary:
    """``rmt-deploy check`` as a value: ``passed`` and one result per (artifact, check).

    Attributes:
        results: One ``CheckResult`` per (artifact, check), with its ``outcome`` (``pass``, ``fail``
            or ``skip``).
    """

    results: list  # bench.check.CheckResult

    @property
    def passed(self) -> bool:
        return not any(r.outcome == "fail" for r in self.results)

    @property
    def failed(self) -> list:
        return [r for r in self.results if r.outcome == "fail"]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "results": [r.to_dict() for r in self.results]}


def latency_entry(measured: dict, runner, threads: int | None, batch: int) -> dict:
    """A ``latency_ms`` block: the percentiles of ``bench.latency.measure`` and what ran them."""
    ran = {"model": runner.last_model} if runner.last_model else {}
    return {**measured, "runtime": runner.name, "device": runner.device, "threads": threads or usable_cores(),
            "batch": batch, **ran}


def failure_reason(e: BaseException) -> str:
    """'TypeName: first line of the message', at most 300 characters of message."""
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"


def stamp() -> dict:
    """The report's tool_version and created fields."""
    return {"tool_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
