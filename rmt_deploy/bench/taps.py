"""Per-tap errors of an artifact against the PyTorch reference, and where they jump.

Comparators only: arrays in, numbers out; no backend is imported here. The job
(``jobs.compare``) collects the tensors; ``rmt-deploy check --taps-baseline`` gates on the result.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserInputError

__all__ = ["TapError", "CompareResult", "tap_error", "first_divergence", "largest_jump", "worst_taps", "DIVERGENCE_RULE",
           "JUMP_FACTOR", "JUMP_FLOOR", "check_taps", "read_taps", "taps_checks", "COMPARE_JSON"]

COMPARE_JSON = "compare.json"  # what `rmt-deploy compare` writes beside the artifact

JUMP_FACTOR, JUMP_FLOOR = 4.0, 1e-3
DIVERGENCE_RULE = (f"first tap, in depth order, with a non-finite value or whose worst-image relative L2 error is "
                   f"at least {JUMP_FLOOR:g} and at least {JUMP_FACTOR:g}x the largest error of all taps before it "
                   "(the input counts as exact)")


@dataclass
class TapError:
    """One tap: worst image and mean over images. ``rel_l2`` = ‖artifact − reference‖ / ‖reference‖."""

    name: str
    cosine: float | None  # worst image (lowest)
    max_abs: float | None  # over all images
    rel_l2: float | None  # worst image (highest)
    nonfinite: int  # NaN/Inf values in the artifact's tensor, all images
    mean_cosine: float | None = None
    mean_rel_l2: float | None = None
    worst_image: int = 0  # index of the image with the highest rel_l2
    isolated_rel_l2: float | None = None  # --isolate: logits error with only this tap's layers in INT8
    isolated_layers: int | None = None

    def diverged_value(self) -> float:
        """rel_l2 for ranking; non-finite values rank first."""
        if self.nonfinite or self.rel_l2 is None:
            return math.inf
        return self.rel_l2


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def tap_error(name: str, reference: np.ndarray, candidate: np.ndarray) -> TapError:
    """Errors of ``candidate`` against ``reference``, both (N, …) in the same layout."""
    if reference.shape != candidate.shape:
        raise ValueError(f"tap {name}: shape {candidate.shape} does not match the reference {reference.shape}")
    n = reference.shape[0]
    ref = reference.reshape(n, -1).astype(np.float64)
    cand = candidate.reshape(n, -1).astype(np.float64)
    finite = np.isfinite(cand)
    nonfinite = int((~finite).sum())
    cand = np.where(finite, cand, 0.0)
    diff = cand - ref
    ref_norm = np.linalg.norm(ref, axis=1)
    rel = np.linalg.norm(diff, axis=1) / np.maximum(ref_norm, 1e-30)
    cos = np.sum(ref * cand, axis=1) / np.maximum(ref_norm * np.linalg.norm(cand, axis=1), 1e-30)
    if nonfinite:  # the numbers of finite values alone would hide the fault
        bad = ~finite.all(axis=1)
        rel[bad], cos[bad] = math.inf, -math.inf
    worst = int(np.argmax(rel))
    return TapError(name, _finite_or_none(cos.min()), _finite_or_none(np.abs(diff).max()), _finite_or_none(rel.max()),
                    nonfinite, _finite_or_none(cos.mean()), _finite_or_none(rel.mean()), worst)


def first_divergence(taps: list[TapError]) -> str | None:
    """The tap where the error jumps (``DIVERGENCE_RULE``); None when no tap does."""
    before = 0.0
    for tap in taps:
        value = tap.diverged_value()
        if not math.isfinite(value) or (value >= JUMP_FLOOR and value >= JUMP_FACTOR * before):
            return tap.name
        before = max(before, value)
    return None


def largest_jump(taps: list[TapError]) -> str | None:
    """The tap whose error grows most over the largest error before it (ratio, errors floored at
    ``JUMP_FLOOR``): where an error that starts early gets much worse."""
    best, best_ratio, before = None, 1.0, JUMP_FLOOR
    for tap in taps:
        value = max(tap.diverged_value(), JUMP_FLOOR)
        ratio = value / before
        if ratio > best_ratio:
            best, best_ratio = tap.name, ratio
        before = max(before, value)
    return best


def worst_taps(taps: list[TapError], k: int) -> list[str]:
    """The ``k`` taps with the highest worst-image error, worst first."""
    return [t.name for t in sorted(taps, key=lambda t: -t.diverged_value())[:k]]


@dataclass
class CompareResult:
    """``rmt-deploy compare`` for one artifact: what ``--json`` prints (``to_dict``)."""

    path: str
    target: str
    precision: str
    runtime: str
    level: str
    images: int
    taps: list[TapError]
    first_divergence: str | None
    worst: list[str]
    largest_jump: str | None = None
    rule: str = DIVERGENCE_RULE
    missing: list[str] = field(default_factory=list)  # taps the artifact has no tensor for
    isolate: list[dict] | None = None  # --isolate ranking: [{"tap", "rel_l2", "layers"}], worst first
    isolate_float: float | None = None  # --isolate: logits error with every layer in float (the runtime's floor)
    plot: str | None = None

    def tap(self, name: str) -> TapError:
        return next(t for t in self.taps if t.name == name)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["taps"] = [asdict(t) for t in self.taps]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CompareResult:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["taps"] = [TapError(**{k: v for k, v in t.items() if k in TapError.__dataclass_fields__})
                          for t in data["taps"]]
        return cls(**values)


def read_taps(path: Path, what: str = "taps file") -> list[CompareResult]:
    """A JSON written by ``rmt-deploy compare`` (``--json`` output or compare.json)."""
    if not Path(path).is_file():
        raise UserInputError(f"{what} not found: {path}")
    try:
        data = json.loads(Path(path).read_text())
        entries = data["artifacts"] if isinstance(data, dict) and "artifacts" in data else [data]
        return [CompareResult.from_dict(e) for e in entries]
    except (ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"{what} {path} is not rmt-deploy compare output ({type(e).__name__}: {e}); "
                             "save one with `rmt-deploy compare ARTIFACT --json > taps.json`") from None


def check_taps(current: list[CompareResult], baseline: list[CompareResult], max_increase: float = 2.0) -> list[dict]:
    """One check per artifact in both: fails when any tap has new non-finite values or a worst-image
    rel_l2 above ``max_increase`` × the baseline's (plus ``JUMP_FLOOR``, so rounding noise passes)."""
    base = {Path(b.path).name: b for b in baseline}
    results = []
    for entry in current:
        key = Path(entry.path).name
        if key not in base:
            results.append({"artifact": key, "outcome": "skip", "reason": "not in the taps baseline"})
            continue
        before = {t.name: t for t in base[key].taps}
        worse = []
        for tap in entry.taps:
            old = before.get(tap.name)
            if old is None:
                continue
            if tap.nonfinite > old.nonfinite:
                worse.append(f"{tap.name}: {tap.nonfinite} non-finite values")
            elif tap.diverged_value() > max_increase * old.diverged_value() + JUMP_FLOOR:
                worse.append(f"{tap.name}: rel_l2 {tap.diverged_value():.3g} vs {old.diverged_value():.3g}")
        results.append({"artifact": key, "outcome": "fail" if worse else "pass",
                        "reason": "; ".join(worse[:3]) + (" …" if len(worse) > 3 else "") if worse else
                        f"{len(entry.taps)} taps within {max_increase:g}x the baseline"})
    return results


def taps_checks(report: Path, baseline: Path) -> list:
    """``rmt-deploy check REPORT --taps-baseline good.json``: the compare.json beside REPORT against
    ``baseline``, as check results (``check`` = "taps")."""
    from .check import CheckResult

    current = Path(report).parent / COMPARE_JSON
    if not current.is_file():
        raise UserInputError(f"--taps-baseline needs {current}; run `rmt-deploy compare ARTIFACT` on the artifacts "
                             f"of {Path(report).parent} first")
    return [CheckResult(r["artifact"], "taps", r["outcome"], None, None, r["reason"])
            for r in check_taps(read_taps(current), read_taps(Path(baseline), "taps baseline"))]
