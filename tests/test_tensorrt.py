"""TensorRT target: readiness check (no GPU), TensorRT-RTX parse+build proxy, script, engine (GPU only)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import onnx_export
from rmt_deploy.targets import tensorrt
from rmt_deploy.targets.trt_readiness import readiness, rtx_build

from .conftest import random_model, real_images, run

SIZE = (224, 224)
needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt-rtx-cu12 not installed (pip install -e '.[trt-check]')")
needs_gpu = pytest.mark.skipif(tensorrt.engine_unavailable_reason() is not None,
                               reason=f"needs an NVIDIA GPU with TensorRT: {tensorrt.engine_unavailable_reason()}")


@pytest.fixture(scope="module")
def rmt_t_onnx(tmp_path_factory):
    """RMT-T at 224²: the FP16 ONNX and the TensorRT-bound INT8 Q/DQ ONNX, as export writes them."""
    folder = tmp_path_factory.mktemp("trt")
    model = random_model("rmt-t")
    fp16 = onnx_export.export_fp16(to_deploy(model, SIZE), folder / "model_fp16.trt.onnx", SIZE,
                                   dynamic_batch=False, metadata={"precision": "fp16"})
    int8 = calibrate_int8(onnx_export.export_for_calibration(model, SIZE, dynamic_batch=False),
                          real_images(SIZE, 8), QuantPolicy(calib_size=8, weight_range="full"))
    path = onnx_export.save(int8.qdq, folder / "model_int8.trt.onnx", {"precision": "int8"})
    return {"fp16": fp16, "int8": path}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_our_onnx_is_ready_for_tensorrt(rmt_t_onnx, precision):
    facts = readiness(onnx.load(str(rmt_t_onnx[precision])))
    assert facts["status"] == "ready", facts["problems"]
    assert facts["explicit_quantization"] == (precision == "int8")


@pytest.mark.slow
@needs_rtx
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_rtx_parses_and_builds_our_onnx(rmt_t_onnx, precision):
    result = rtx_build(rmt_t_onnx[precision])
    assert result["parsed"] and result["built"] and result["status"] == "ok", result["errors"]
    assert "not TensorRT itself" in result["proxy"] and result["layers"] > 100


def _tiny_qdq(zero_point: int = 0, extra_op: str | None = None, dynamic_width: bool = False):
    """x → Q → DQ → Conv(W via DQ) → y: the smallest explicit-quantization graph."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(zero_point, np.int8), "z"),
             numpy_helper.from_array(np.round(w / 0.01).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="wdq", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["y"], ["y2"], name="odd"))
    width = "w" if dynamic_width else 8
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, width])],
                              [helper.make_tensor_value_info("y2" if extra_op else "y", onnx.TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_readiness_catches_planted_violations():
    assert readiness(_tiny_qdq())["status"] == "ready"
    asymmetric = readiness(_tiny_qdq(zero_point=3))
    assert asymmetric["status"] == "problems" and any("zero point" in p for p in asymmetric["problems"])
    unsupported = readiness(_tiny_qdq(extra_op="StringNormalizer"))
    assert any("StringNormalizer" in p for p in unsupported["problems"])
    dynamic = readiness(_tiny_qdq(dynamic_width=True))
    assert any("axis 3 is dynamic" in p for p in dynamic["problems"])


def test_trtexec_command_carries_the_profile_and_options():
    settings = tensorrt.EngineSettings(workspace_gib=1, dla_core=0, min_batch=1, opt_batch=4, max_batch=8)
    cmd = tensorrt.trtexec_command("m.trt.onnx", "m.engine", "int8", "input", [None, 3, 224, 224], settings)
    assert "--stronglyTyped" in cmd and "--memPoolSize=workspace:1024M" in cmd
    assert "--optShapes=input:4x3x224x224" in cmd and "--maxShapes=input:8x3x224x224" in cmd
    assert "--useDLACore=0" in cmd and "--allowGPUFallback" in cmd


@pytest.mark.skipif(tensorrt.engine_unavailable_reason() is None, reason="a GPU with TensorRT is here")
def test_export_without_tensorrt_writes_onnx_script_and_skipped_entry(tmp_path):
    out = tmp_path / "out"
    result = run("export", "--target", "trt", "--out", str(out), "--bench-iters", "0", "--parity-samples", "4")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((out / "report.json").read_text())["artifacts"]
    assert entry["target"] == "trt" and entry["precision"] == "fp16" and entry["status"] == "skipped"
    assert "engine not built" in entry["reason"] and entry["path"] == "model_fp16.trt.onnx"
    assert entry["readiness"]["status"] == "ready" and entry["onnx_parity"]["cosine"] >= 0.999
    script = (out / "build_engine.sh").read_text()
    assert "trtexec --onnx=model_fp16.trt.onnx --saveEngine=model_fp16.engine" in script
    assert "readiness" in (out / "report.md").read_text()
    strict = run("export", "--target", "trt", "--require-engine", "--out", str(tmp_path / "o2"))
    assert strict.returncode == 2 and "--require-engine" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "o2").exists()
    engine = run("build-engine", str(out / "model_fp16.trt.onnx"))
    assert engine.returncode == 2 and "Traceback" not in engine.stderr and "GPU" in engine.stderr


@pytest.mark.gpu
@needs_gpu
def test_engine_matches_onnxruntime(rmt_t_onnx, tmp_path):
    from rmt_deploy.bench.parity import compare_logits

    x = real_images(SIZE, 4)
    for precision, min_cosine in (("fp16", 0.999), ("int8", 0.99)):
        engine = tmp_path / f"{precision}.engine"
        sidecar = tensorrt.build_engine(rmt_t_onnx[precision], engine, tensorrt.EngineSettings())
        assert sidecar["gpu"] and sidecar["source_onnx_sha256"]
        with onnx_target.TARGET.load(rmt_t_onnx[precision]) as ort, tensorrt.TARGET.load(engine) as trt:
            want = np.concatenate([ort.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
            got = np.concatenate([next(iter(trt.infer({"input": x[i:i + 1]}).values())) for i in range(len(x))])
        parity = compare_logits(want, got)
        assert parity["cosine"] >= min_cosine and parity["top1_agreement"] == 1.0
