"""Verification failures, provoked: what a user sees when an artifact misses its check.

Each test makes a real export miss one check — a floor above what the precision reaches, a CPU
INT8 graph off the 7-bit weight grid, an accuracy budget a target cannot meet — and checks the
promise: exit 1, the report written with the failed entry's ``stage`` and ``reason``, the bad file
removed (or kept, where README says the best model is kept), the other artifacts untouched.
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rmt_deploy.cli.app import app
from rmt_deploy.jobs import sources, verify

FAST = ["--bench-iters", "0", "--parity-samples", "4", "--calib-size", "16"]


def _export(*args: str):
    result = CliRunner().invoke(app, ["export", *args, *FAST])
    return result.exit_code, result.output


def _entries(out) -> dict:
    report = json.loads((out / "report.json").read_text())
    return {(a["target"], a["precision"]): a for a in report["artifacts"]}


def test_int8_and_fp16_below_their_floor_fail_and_are_removed(tmp_path, monkeypatch):
    # Floors no artifact can reach (a cosine is at most 1): the real export, judged strictly.
    monkeypatch.setattr(verify, "MIN_COSINE", {"fp16": 1.5, "bf16": 1.5, "int8": 1.5})
    out = tmp_path / "out"
    code, output = _export("--target", "onnx", "--int8", "--fp16", "--out", str(out))
    assert code == 1, output
    entries = _entries(out)
    assert entries["onnx", "fp32"]["status"] == "ok" and (out / "model.onnx").exists()
    for precision in ("int8", "fp16"):
        entry = entries["onnx", precision]
        assert entry["status"] == "failed" and entry["stage"] == "validation" and entry["path"] is None
        assert f"below 1.5 for {precision}" in entry["reason"] and entry["reason"].endswith("model removed")
        assert not (out / f"model_{precision}.onnx").exists()
    assert "onnx/int8: worst logit cosine" in output and "report.json" in output


def test_cpu_int8_off_the_7bit_grid_is_refused(tmp_path, monkeypatch):
    # Calibrate the CPU graph on the full 8-bit grid (what TensorRT gets): the export reads the grid
    # back from the graph it wrote and refuses weights that would saturate on x86 without VNNI.
    monkeypatch.setattr(sources, "CPU_WEIGHT_RANGE", "full")
    out = tmp_path / "out"
    code, output = _export("--target", "onnx", "--int8", "--out", str(out))
    assert code == 1, output
    entry = _entries(out)["onnx", "int8"]
    assert entry["status"] == "failed" and entry["stage"] == "export" and entry["path"] is None
    assert "weights beyond ±64" in entry["reason"] and "without VNNI" in entry["reason"]
    assert not (out / "model_int8.onnx").exists() and (out / "model.onnx").exists()


def test_core_ml_check_failures_remove_or_keep_as_promised(tmp_path, monkeypatch):
    """One Core ML export, two failures: FP16 misses its numeric check (removed); INT8 — weight-only,
    no per-layer fallback — misses an accuracy budget, which fails the export and keeps the package."""
    pytest.importorskip("coremltools", reason="coremltools not installed")
    monkeypatch.setattr(verify, "MIN_COSINE", {**verify.MIN_COSINE, "fp16": 1.5, "bf16": 1.5})
    out = tmp_path / "out"
    code, output = _export("--target", "coreml", "--int8", "--fp16", "--min-cosine", "0.99999999", "--out", str(out))
    assert code == 1, output
    entries = _entries(out)
    fp16, int8 = entries["coreml", "fp16"], entries["coreml", "int8"]
    assert fp16["status"] == "failed" and fp16["stage"] == "validation" and "model removed" in fp16["reason"]
    assert fp16["verified_with"].startswith("coreml") and not (out / "model_fp16.mlpackage").exists()
    assert int8["status"] == "failed" and int8["stage"] == "accuracy"
    assert "misses --min-cosine 0.99999999" in int8["reason"] and "kept model_int8.mlpackage" in int8["reason"]
    assert int8["accuracy_aware"]["fits"] is False and (out / "model_int8.mlpackage").exists()
