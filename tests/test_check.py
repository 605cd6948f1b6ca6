"""`check` on crafted reports: pass, fail, skip, baselines, per-target limits, JUnit, exit codes."""
from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import pytest

from rmt_deploy.bench.check import Limits, check_report, load_limits, write_junit
from rmt_deploy.errors import UserInputError

from .conftest import run


def _artifact(target="onnx", precision="fp32", top1=90.0, fp32=90.0, p50=10.0, status="ok"):
    return {"target": target, "precision": precision, "status": status, "reason": None if status == "ok" else "why",
            "accuracy": {"top1": top1, "top1_fp32": fp32, "drop": round(fp32 - top1, 3)},
            "latency_ms": {"p50": p50}}


def _report(*artifacts):
    return {"schema_version": 1, "artifacts": list(artifacts)}


def _outcomes(results):
    return {(r.artifact, r.check): r.outcome for r in results}


def test_passes_within_limits_against_own_fp32():
    res = check_report(_report(_artifact(top1=89.7)), None, {"default": Limits(0.5, 0.15)})
    assert _outcomes(res) == {("onnx/fp32", "status"): "pass", ("onnx/fp32", "accuracy"): "pass",
                              ("onnx/fp32", "latency"): "skip"}


def test_accuracy_drop_fails():
    res = check_report(_report(_artifact(precision="int8", top1=89.0)), None, {"default": Limits(0.5, 0.15)})
    acc = next(r for r in res if r.check == "accuracy")
    assert acc.outcome == "fail" and acc.measured == 1.0 and acc.limit == 0.5


def test_baseline_latency_regression_and_accuracy():
    base = _report(_artifact(top1=90.0, p50=10.0))
    slower = _report(_artifact(top1=90.0, p50=11.6))
    res = check_report(slower, base, {"default": Limits(0.5, 0.15)})
    lat = next(r for r in res if r.check == "latency")
    assert lat.outcome == "fail" and lat.measured == pytest.approx(0.16)
    ok = check_report(_report(_artifact(p50=11.4)), base, {"default": Limits(0.5, 0.15)})
    assert all(r.outcome == "pass" for r in ok)
    worse = check_report(_report(_artifact(top1=89.0, fp32=89.0)), base, {"default": Limits(0.5, 0.15)})
    assert next(r for r in worse if r.check == "accuracy").outcome == "fail"  # vs baseline, not own FP32


def test_failed_and_skipped_status():
    res = check_report(_report(_artifact(status="failed"), _artifact(target="trt", status="skipped")), None,
                       {"default": Limits()})
    assert _outcomes(res) == {("onnx/fp32", "status"): "fail", ("trt/fp32", "status"): "skip"}


def test_missing_accuracy_is_skipped_not_passed():
    art = _artifact()
    art["accuracy"] = None
    res = check_report(_report(art), None, {"default": Limits()})
    assert next(r for r in res if r.check == "accuracy").outcome == "skip"


def test_config_overrides_per_target_and_precision(tmp_path):
    cfg = tmp_path / "limits.json"
    cfg.write_text(json.dumps({"default": {"max_drop": 0.2}, "onnx": {"max_latency_regression": 0.5},
                               "onnx/int8": {"max_drop": 1.5}}))
    table = load_limits(cfg, Limits(0.5, 0.15))
    assert table["default"] == Limits(0.2, 0.15)
    assert table["onnx"] == Limits(0.2, 0.5) and table["onnx/int8"] == Limits(1.5, 0.5)
    res = check_report(_report(_artifact(precision="int8", top1=89.0), _artifact(top1=89.7)), None, table)
    assert _outcomes(res)[("onnx/int8", "accuracy")] == "pass"
    assert _outcomes(res)[("onnx/fp32", "accuracy")] == "fail"  # 0.3 > default 0.2


@pytest.mark.parametrize("content,match", [
    ("[1, 2]", "JSON object"), ("{bad", "cannot read"),
    ('{"onnx": {"max_dorp": 1}}', "unknown fields"), ('{"onnx": {"max_drop": -1}}', "non-negative"),
])
def test_bad_config(tmp_path, content, match):
    cfg = tmp_path / "c.json"
    cfg.write_text(content)
    with pytest.raises(UserInputError, match=match):
        load_limits(cfg, Limits())


def test_junit_xml(tmp_path):
    res = check_report(_report(_artifact(top1=80.0), _artifact(target="trt", status="skipped")), None,
                       {"default": Limits()})
    write_junit(res, tmp_path / "j" / "out.xml")
    suite = ET.parse(tmp_path / "j" / "out.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "1" and suite.get("skipped") == "2"
    failure = suite.find("testcase[@name='accuracy']/failure")
    assert "drop 10.00 points" in failure.get("message")


# ---------------------------------------------------------------- the command


def _write(path, report):
    path.write_text(json.dumps(report))
    return path


def test_cli_exit_codes(tmp_path):
    good = _write(tmp_path / "good.json", _report(_artifact(top1=89.8)))
    bad = _write(tmp_path / "bad.json", _report(_artifact(top1=85.0)))
    base = _write(tmp_path / "base.json", _report(_artifact(p50=5.0)))
    assert run("check", str(good)).returncode == 0
    result = run("check", str(bad), "--junit", str(tmp_path / "j.xml"))
    assert result.returncode == 1 and "1 failed" in result.stdout and (tmp_path / "j.xml").exists()
    assert run("check", str(good), "--baseline", str(base)).returncode == 1  # 10 ms vs 5 ms
    assert run("check", str(good), "--baseline", str(base), "--max-latency-regression", "1.5").returncode == 0
    out = json.loads(run("check", str(bad), "--json").stdout)
    assert out["passed"] is False and {r["outcome"] for r in out["results"]} == {"pass", "fail", "skip"}


@pytest.mark.parametrize("make,match", [
    (lambda p: None, "report not found"),
    (lambda p: p.write_text("{oops"), "not valid JSON"),
    (lambda p: p.write_text('{"model": {}}'), "not an rmt-deploy report"),
])
def test_cli_bad_reports(tmp_path, make, match):
    path = tmp_path / "r.json"
    make(path)
    result = run("check", str(path))
    assert result.returncode == 2 and match in result.stderr and "Traceback" not in result.stderr


def test_cli_negative_limit(tmp_path):
    good = _write(tmp_path / "good.json", _report(_artifact()))
    result = run("check", str(good), "--max-drop", "-1")
    assert result.returncode == 2 and "non-negative" in result.stderr


def test_check_on_real_export(tmp_path):
    out = tmp_path / "o"
    assert run("export", "--out", str(out), "--bench-iters", "3", "-q").returncode == 0
    report = json.loads((out / "report.json").read_text())
    slower = copy.deepcopy(report)
    slower["artifacts"][0]["latency_ms"]["p50"] *= 2
    _write(tmp_path / "slower.json", slower)
    assert run("check", str(out / "report.json")).returncode == 0
    assert run("check", str(tmp_path / "slower.json"), "--baseline", str(out / "report.json")).returncode == 1
