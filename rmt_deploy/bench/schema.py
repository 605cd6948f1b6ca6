"""The report schema (DESIGN §6) in code: the pieces export and bench both write.

``report.json`` stays plain JSON: these types build its parts with one skeleton each, so an
entry written by ``export`` and one written by ``bench`` carry the same keys.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field

from .. import __version__

__all__ = ["ArtifactEntry", "latency_entry", "failure_reason", "stamp"]


@dataclass
class ArtifactEntry:
    """One (target, precision) artifact: where it is, whether it is good, and its numbers.

    ``status`` is ok / skipped / failed; ``stage`` says where a failure happened (export,
    preflight, readiness, validation, accuracy, load, benchmark). ``details`` holds what only
    some targets have (quantization, readiness, execution …); ``to_dict`` puts them beside the
    common keys.
    """

    target: str
    precision: str
    path: str | None = None
    size_bytes: int | None = None
    status: str = "ok"
    stage: str | None = None
    reason: str | None = None
    parity: dict | None = None
    accuracy: dict | None = None
    latency_ms: dict | None = None
    graph: dict | None = None
    export_seconds: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, stage: str, reason: str) -> None:
        self.status, self.stage, self.reason = "failed", stage, reason

    def skip(self, reason: str) -> None:
        self.status, self.reason = "skipped", reason

    def to_dict(self) -> dict:
        common = {k: getattr(self, k) for k in ("target", "precision", "path", "size_bytes", "status", "stage",
                                                "reason", "parity", "accuracy", "latency_ms", "graph",
                                                "export_seconds")}
        return {**common, **self.details}


def latency_entry(measured: dict, runner, threads: int | None, batch: int) -> dict:
    """A ``latency_ms`` block: the percentiles of ``bench.latency.measure`` and what ran them."""
    return {**measured, "runtime": runner.name, "device": runner.device, "threads": threads or os.cpu_count(),
            "batch": batch}


def failure_reason(e: BaseException) -> str:
    """'TypeName: first line of the message', at most 300 characters of message."""
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"


def stamp() -> dict:
    """The report's tool_version and created fields."""
    return {"tool_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
