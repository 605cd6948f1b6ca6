"""Verification failures, provoked: what a user sees when an artifact misses its check.

Each test makes a real export miss one check — a floor above what the precision reaches, a CPU
INT8 graph off the 7-bit weight grid, an accuracy budget a target cannot meet — and checks the
promise: exit 1, the report written with the failed entry's ``stage`` and ``reason``, the bad file
removed (or kept, where README says the best model is kept), the other artifacts untouched.
"""
from __future__ import annotations

import json
import struct

import pytest
from typer.testing import CliRunner

from rmt_deploy.cli.app import app
from rmt_deploy.jobs import verify
from rmt_deploy.quant import policy

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
    # A calibration that puts the CPU graph on the full 8-bit grid (what TensorRT gets) although 7 bits were
    # asked: the export reads the grid back from the graph it wrote and refuses weights that would
    # saturate on x86 without VNNI.
    monkeypatch.setitem(policy.WEIGHT_RANGES, "portable", policy.WEIGHT_RANGES["full"])
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


def test_a_converter_that_fails_costs_only_its_own_artifact(tmp_path, monkeypatch):
    """Converters that write files their own runtimes refuse (MNN, LiteRT) and an ONNX that TensorRT's
    parser rejects: each is that artifact's failure, with its stage; model.onnx is verified and kept,
    the report is written, exit 1 — not exit 2 with every finished artifact thrown away."""
    from rmt_deploy.targets import litert, mnn, trt_readiness

    for module in ("MNN", "ai_edge_litert", "litert_torch", "tensorrt_rtx"):
        pytest.importorskip(module, reason=f"{module} not installed")
    # Real refusals: MNN's loader and LiteRT's flatbuffer verifier reject these bytes with an error
    # (they pass the Python-side format checks, so the native loaders really read them).
    bad_mnn = struct.pack("<I", 16) + bytes(12) + struct.pack("<i", 8) + bytes(64)
    bad_tflite = struct.pack("<I", 16) + b"TFL3" + bytes(range(56))
    monkeypatch.setattr(mnn, "_mnnconvert", lambda args, out: out.write_bytes(bad_mnn))
    monkeypatch.setattr(litert, "convert_module", lambda *a, **k: b"")
    monkeypatch.setattr(litert.LiteRTTarget, "_save", staticmethod(lambda data, path, meta: path.write_bytes(bad_tflite)))
    real_build = trt_readiness.rtx_build

    def cut_then_build(path):  # TensorRT-RTX's parser on a cut copy of the file we wrote
        cut = path.with_name("cut.onnx")
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return real_build(cut)

    monkeypatch.setattr(trt_readiness, "rtx_build", cut_then_build)
    out = tmp_path / "out"
    code, output = _export("--target", "onnx,mnn,litert,trt", "--out", str(out))
    assert code == 1, output
    entries = _entries(out)
    assert entries["onnx", "fp32"]["status"] == "ok" and (out / "model.onnx").exists()
    mnn_entry, litert_entry = entries["mnn", "fp32"], entries["litert", "fp32"]
    assert mnn_entry["status"] == "failed" and mnn_entry["stage"] == "validation", mnn_entry
    assert "MNN cannot load it" in mnn_entry["reason"] and not (out / "model.mnn").exists()
    assert litert_entry["status"] == "failed" and litert_entry["stage"] == "inspection", litert_entry
    assert "LiteRT cannot load it" in litert_entry["reason"] and not (out / "model.tflite").exists()
    trt = entries["trt", "fp16"]
    assert trt["status"] == "failed" and trt["stage"] == "readiness", trt
    assert "cannot parse it" in trt["reason"] and trt["readiness"]["rtx_build"]["parsed"] is False
    assert "mnn/fp32" in output and "litert/fp32" in output and "report.json" in output


def test_our_own_bug_while_reading_an_artifact_is_an_internal_error_not_bad_input(tmp_path, monkeypatch):
    """A KeyError in rmt-deploy's own code is reported as an internal error (exit 1, please report),
    never rephrased as a damaged file (exit 2); RMT_DEPLOY_DEBUG shows the original traceback."""
    from rmt_deploy.targets import onnx as onnx_target

    def broken(path):
        return {}["input_name"]

    monkeypatch.setattr(onnx_target.OnnxTarget, "describe", lambda self, path: broken(path))
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"never read: describe fails first")
    result = CliRunner().invoke(app, ["predict", str(artifact), "--topk", "1"])
    assert result.exit_code == 1, result.output
    assert "internal error" in result.output and "KeyError" in result.output and "please report" in result.output
    assert "not a readable" not in result.output
    monkeypatch.setenv("RMT_DEPLOY_DEBUG", "1")
    result = CliRunner().invoke(app, ["predict", str(artifact), "--topk", "1"])
    assert isinstance(result.exception, KeyError)
