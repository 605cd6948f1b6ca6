"""`rmt-deploy check`: gate CI on accuracy drop and latency regression.

Each artifact of a report (keyed ``target/precision``) is checked for
- status: ``ok`` passes, ``failed`` fails, ``skipped`` is reported as skipped;
- accuracy drop: against the same artifact in ``--baseline`` when given, else against the
  FP32 reference of the same report (``accuracy.drop``), limit ``max_drop`` points;
- latency regression: p50 against the baseline's, limit ``max_latency_regression``
  (0.15 = 15% slower), only when a baseline with latency exists;
- feature parity (backbones, or any artifact when set): worst per-image cosine vs PyTorch FP32 of
  each output, limit ``min_cosine`` (off by default).
Limits come from flags, optionally overridden per target by a JSON config:
``{"default": {"max_drop": 0.5}, "onnx/int8": {"max_drop": 1.0}, "trt": {"max_latency_regression": 0.3}}``.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserInputError

__all__ = ["Limits", "CheckResult", "read_report", "load_limits", "check_report", "write_junit"]


@dataclass(frozen=True)
class Limits:
    max_drop: float | None = 0.5  # top-1 points
    max_latency_regression: float | None = 0.15  # fraction of the baseline p50
    min_cosine: float | None = None  # worst per-image cosine vs PyTorch FP32, per output


@dataclass
class CheckResult:
    artifact: str  # target/precision
    check: str  # status / accuracy / latency
    outcome: str  # pass / fail / skip
    measured: float | None
    limit: float | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def read_report(path: Path, what: str = "report") -> dict:
    if not path.is_file():
        raise UserInputError(f"{what} not found: {path}")
    try:
        report = json.loads(path.read_text())
    except ValueError as e:
        raise UserInputError(f"{what} {path} is not valid JSON ({e})") from None
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), list):
        raise UserInputError(f"{what} {path} is not an rmt-deploy report (no 'artifacts' list)")
    return report


def load_limits(config: Path | None, defaults: Limits) -> dict[str, Limits]:
    """Per-key limits: 'default', 'target' or 'target/precision' entries of a JSON file."""
    for name, value in asdict(defaults).items():
        if value is not None and value < 0:
            raise UserInputError(f"--{name.replace('_', '-')} must be a non-negative number")
    if defaults.min_cosine is not None and defaults.min_cosine > 1:
        raise UserInputError(f"--min-cosine {defaults.min_cosine:g} must be at most 1 (e.g. 0.99)")
    table = {"default": defaults}
    if config is None:
        return table
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read check config {config}: {e}") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"check config {config} must be a JSON object of limits per target")
    base = asdict(defaults)
    for key in sorted(raw, key=lambda k: (k != "default", "/" in k)):  # default, target, target/precision
        values = raw[key]
        unknown = set(values) - set(base) if isinstance(values, dict) else {"(not an object)"}
        if unknown:
            raise UserInputError(f"check config {config}: '{key}' has unknown fields {sorted(unknown)}; "
                                 f"use {sorted(base)}")
        for name, value in values.items():
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise UserInputError(f"check config {config}: {key}.{name} must be a non-negative number")
        parent = table.get(key.split("/")[0], table["default"]) if "/" in key else table["default"]
        table[key] = Limits(**{**asdict(parent), **values})
    return table


def _limits_for(key: str, table: dict[str, Limits]) -> Limits:
    return table.get(key) or table.get(key.split("/")[0]) or table["default"]


def check_report(report: dict, baseline: dict | None, table: dict[str, Limits]) -> list[CheckResult]:
    base = {f"{a['target']}/{a['precision']}": a for a in (baseline or {}).get("artifacts", [])}
    results = []
    for a in report["artifacts"]:
        key = f"{a['target']}/{a['precision']}"
        limits = _limits_for(key, table)
        if a["status"] != "ok":
            outcome = "skip" if a["status"] == "skipped" else "fail"
            results.append(CheckResult(key, "status", outcome, None, None, f"{a['status']}: {a.get('reason')}"))
            continue
        results.append(CheckResult(key, "status", "pass", None, None, "ok"))
        results.append(_accuracy(key, a, base.get(key), limits))
        results += _cosine(key, a, limits)
        results.append(_latency(key, a, base.get(key), limits, baseline is not None))
    if not results:
        raise UserInputError("the report has no artifacts to check")
    return results


def _accuracy(key: str, entry: dict, base: dict | None, limits: Limits) -> CheckResult:
    acc = entry.get("accuracy") or {}
    base_acc = (base or {}).get("accuracy") or {}
    if limits.max_drop is None:
        return CheckResult(key, "accuracy", "skip", None, None, "no max_drop limit")
    if acc.get("top1") is not None and base_acc.get("top1") is not None:
        drop, against = base_acc["top1"] - acc["top1"], f"baseline top-1 {base_acc['top1']:.2f}"
    elif acc.get("drop") is not None:
        drop, against = acc["drop"], f"FP32 top-1 {acc['top1_fp32']:.2f}"
    else:
        return CheckResult(key, "accuracy", "skip", None, limits.max_drop,
                           "no accuracy in the report (export or bench with --eval DIR)")
    ok = drop <= limits.max_drop + 1e-9
    return CheckResult(key, "accuracy", "pass" if ok else "fail", round(drop, 3), limits.max_drop,
                       f"top-1 {acc['top1']:.2f}, drop {drop:.2f} points vs {against}")


def _cosine(key: str, entry: dict, limits: Limits) -> list[CheckResult]:
    """One result per output of a backbone (``parity.outputs``), else one for the logits."""
    if limits.min_cosine is None:
        return []
    parity = entry.get("parity") or {}
    per_output = parity.get("outputs") or ({"logits": parity} if parity.get("cosine") is not None else {})
    if not per_output:
        return [CheckResult(key, "cosine", "skip", None, limits.min_cosine, "no parity figures in the report")]
    results = []
    for name, figures in per_output.items():
        cosine = figures["cosine"]
        ok = cosine >= limits.min_cosine - 1e-12
        results.append(CheckResult(key, f"cosine {name}", "pass" if ok else "fail", round(cosine, 6),
                                   limits.min_cosine, f"{name}: worst image cosine {cosine:.5f} vs PyTorch FP32"))
    return results


def _latency(key: str, entry: dict, base: dict | None, limits: Limits, has_baseline: bool) -> CheckResult:
    now = (entry.get("latency_ms") or {}).get("p50")
    before = ((base or {}).get("latency_ms") or {}).get("p50")
    if limits.max_latency_regression is None:
        return CheckResult(key, "latency", "skip", None, None, "no max_latency_regression limit")
    if not has_baseline:
        return CheckResult(key, "latency", "skip", None, limits.max_latency_regression, "no --baseline")
    if now is None or before is None:
        return CheckResult(key, "latency", "skip", None, limits.max_latency_regression,
                           "latency missing in the report or the baseline")
    change = now / before - 1.0
    ok = change <= limits.max_latency_regression + 1e-9
    return CheckResult(key, "latency", "pass" if ok else "fail", round(change, 4), limits.max_latency_regression,
                       f"p50 {now:.2f} ms vs baseline {before:.2f} ms ({change:+.1%})")


def write_junit(results: list[CheckResult], path: Path) -> None:
    """One testsuite, one testcase per (artifact, check); failures and skips as JUnit expects."""
    suite = ET.Element("testsuite", name="rmt-deploy check", tests=str(len(results)),
                       failures=str(sum(r.outcome == "fail" for r in results)),
                       skipped=str(sum(r.outcome == "skip" for r in results)))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"rmt-deploy.{r.artifact}", name=r.check)
        if r.outcome == "fail":
            ET.SubElement(case, "failure", message=r.reason).text = r.reason
        elif r.outcome == "skip":
            ET.SubElement(case, "skipped", message=r.reason)
        else:
            ET.SubElement(case, "system-out").text = r.reason
    tree = ET.ElementTree(ET.Element("testsuites"))
    tree.getroot().append(suite)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
