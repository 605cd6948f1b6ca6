"""INT8 (NNCF calibration, TensorRT and ONNX Runtime encodings), accuracy-aware mode, FP16."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from rmt_deploy.bundled import bundled_images
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.model.checkpoint import load_model, metadata_json
from rmt_deploy.quant import checks
from rmt_deploy.quant.accuracy_aware import fit_budget, rank_layers
from rmt_deploy.quant.encode import GraphIndex, quantized_layers, revert
from rmt_deploy.quant.fp16 import to_fp16
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx_export

SIZE = (64, 64)


@pytest.fixture(scope="module")
def demo(demo_weights):
    loaded = load_model(demo_weights)
    mean, std = (tuple(metadata_json(loaded.checkpoint, f"rmt_deploy.{k}")) for k in ("mean", "std"))
    pre = Preprocess(SIZE, crop_pct=1.0, mean=mean, std=std)
    calib, _, _ = load_batch(open_image_set(bundled_images("train")).subset(32), pre)
    x, _, _ = load_batch(open_image_set(bundled_images("val")).subset(24), pre)
    return loaded.model, calib, x


@pytest.fixture(scope="module")
def int8(demo):
    model, calib, _ = demo
    return calibrate_int8(onnx_export.export_for_calibration(model, SIZE, dynamic_batch=True), calib, QuantPolicy())


def _run(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {onnx_export.INPUT_NAME: x})[0]


def _fp32_logits(model, x):
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _cosine(a, b):
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _attention_matmuls(proto):
    idx = GraphIndex(proto.graph)
    # MatMuls whose second operand is computed (not a weight): q @ k^T and attn @ v
    return [n for n in proto.graph.node if n.op_type == "MatMul" and
            not (idx.parent(n, 1) is not None and idx.parent(n, 1).input[0] in idx.init)]


def test_tensorrt_encoding_structure(demo, int8):
    proto = int8.qdq
    assert checks.tensorrt_problems(proto) == []
    idx = GraphIndex(proto.graph)
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = numpy_helper.to_array(idx.init[node.input[2]])
            assert zero.dtype == np.int8 and not zero.any(), node.name
            scale = numpy_helper.to_array(idx.init[node.input[1]])
            if node.input[0] in idx.init:  # weight: one scale per output channel
                weight = numpy_helper.to_array(idx.init[node.input[0]])
                axis = next(a.i for a in node.attribute if a.name == "axis") % weight.ndim
                assert scale.shape == (weight.shape[axis],) and weight.dtype == np.int8
            else:
                assert scale.size == 1, node.name
    attention = _attention_matmuls(proto)
    cfg = demo[0].cfg  # q @ kᵀ and attn @ v per pass; decomposed stages make two passes per block
    assert len(attention) == 2 * sum(d * (2 if chunk else 1) for d, chunk in zip(cfg.depths, cfg.chunk_stages))
    for node in attention:  # Q/DQ on both inputs of both attention matmuls
        assert idx.is_dq(node, 0) and idx.is_dq(node, 1), node.name
    for node in proto.graph.node:  # nothing quantized inside LayerNorm / Softmax / GELU
        if node.op_type in ("LayerNormalization", "Softmax", "Erf", "Div"):
            assert not any(idx.is_dq(node, i) for i in range(len(node.input))), node.name
    counts = checks.quantizer_summary(proto)["quantized_layers"]
    assert counts["Conv"] > 0 and counts["MatMul"] > len(attention)


def test_tensorrt_check_catches_planted_violations(int8):
    asymmetric = copy.deepcopy(int8.qdq)
    q = next(n for n in asymmetric.graph.node if n.op_type == "QuantizeLinear")
    asymmetric.graph.initializer.append(numpy_helper.from_array(np.array(3, np.int8), "planted_zero"))
    q.input[2] = "planted_zero"
    assert any("zero point must be int8 0" in p for p in checks.tensorrt_problems(asymmetric))

    in_layernorm = copy.deepcopy(int8.qdq)
    idx = GraphIndex(in_layernorm.graph)
    ln = next(n for n in in_layernorm.graph.node if n.op_type == "LayerNormalization")
    some_dq = next(n for n in in_layernorm.graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in idx.init)
    extra = helper.make_node("QuantizeLinear", [ln.input[0], some_dq.input[1], some_dq.input[2]], ["planted_q"], name="pq")
    extra_dq = helper.make_node("DequantizeLinear", ["planted_q", some_dq.input[1], some_dq.input[2]], ["planted_dq"],
                                name="pdq")
    pos = list(in_layernorm.graph.node).index(ln)
    in_layernorm.graph.node.insert(pos, extra_dq)
    in_layernorm.graph.node.insert(pos, extra)
    ln.input[0] = "planted_dq"
    assert any("feeds LayerNormalization" in p for p in checks.tensorrt_problems(in_layernorm))

    unquantized = copy.deepcopy(int8.qdq)
    revert(unquantized, [_attention_matmuls(unquantized)[0].name])
    assert any("is not quantized" in p for p in checks.tensorrt_problems(unquantized))


def test_onnxruntime_encoding_structure_and_fusion(int8, tmp_path):
    proto = int8.onnxruntime
    assert checks.onnxruntime_problems(proto) == []
    idx = GraphIndex(proto.graph)
    activation_zero_points = {numpy_helper.to_array(idx.init[n.input[2]]).tobytes() + bytes(
        str(numpy_helper.to_array(idx.init[n.input[2]]).dtype), "ascii")
        for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in idx.init}
    assert activation_zero_points == {np.array(128, np.uint8).tobytes() + b"uint8"}
    assert not any(idx.is_dq(n, 0) for n in _attention_matmuls(proto))  # faster in float here
    biases = [idx.parent(n, 2) for n in proto.graph.node
              if n.op_type in ("Gemm", "Conv") and idx.is_dq(n, 0) and len(n.input) > 2]
    assert biases and all(numpy_helper.to_array(idx.init[b.input[0]]).dtype == np.int32 for b in biases)
    assert int8.float_for_speed and set(int8.float_for_speed).isdisjoint(quantized_layers(proto))

    # What ONNX Runtime makes of it: fused int8 kernels, no weight dequantized at run time.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "QLinearConv" in fused and ("MatMulIntegerToFloat" in fused or "QGemm" in fused)
    opt_idx = GraphIndex(onnx.load(str(tmp_path / "optimized.onnx")).graph)
    assert not [n for n in opt_idx.producer.values() if n.op_type == "DequantizeLinear" and n.input[0] in opt_idx.init]


def test_int8_logits_close_to_fp32(demo, int8):
    model, _, x = demo
    ref = _fp32_logits(model, x)
    # Measured (AMD EPYC Zen 5, and deterministic: NNCF's calibration and the 7-bit grid are exact on
    # every CPU): worst cosine 0.998 for the Q/DQ graph (attention matmuls int8 too), 0.99998 for
    # ONNX Runtime's encoding; every one of the 24 images keeps its class.
    for proto, floor in ((int8.qdq, 0.995), (int8.onnxruntime, 0.9995)):
        logits = _run(proto, x)
        assert _cosine(logits, ref) >= floor
        assert (logits.argmax(1) == ref.argmax(1)).all()


def test_revert_everything_gives_a_float_graph(demo, int8):
    model, _, x = demo
    proto = copy.deepcopy(int8.qdq)
    reverted = revert(proto, quantized_layers(proto), int8.float_model)
    assert len(reverted) == len(quantized_layers(int8.qdq))
    assert not [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    # With the original weights and biases back, the graph is the FP32 model again.
    assert np.abs(_run(proto, x) - _fp32_logits(model, x)).max() < 1e-4


def test_rank_layers_puts_the_noisiest_first(demo, int8):
    model, _, x = demo
    proto = int8.onnxruntime
    ref = _fp32_logits(model, x)
    ranking = rank_layers(proto, int8.float_model, lambda c: _run(c, x), ref.astype(np.float64))
    assert [r["layer"] for r in ranking] and len(ranking) == len(quantized_layers(proto))
    errors = [r["mse_if_float"] for r in ranking]
    assert errors == sorted(errors)
    base = float(np.mean((_run(proto, x) - ref) ** 2))
    assert errors[0] < base  # putting the most sensitive layer in float helps


def test_fit_budget_keeps_best_when_nothing_fits(int8):
    layers = quantized_layers(int8.onnxruntime)
    ranking = [{"layer": name, "mse_if_float": 0.0} for name in layers]
    drops = iter([3.0, 2.0, 2.5, 2.2, 2.1, 2.4, 2.6, 2.3])
    result = fit_budget(int8.onnxruntime, int8.float_model, lambda m: next(drops), ranking, max_drop=0.1,
                        initial_drop=4.0)
    assert not result.fits and result.drop == 2.0 and len(result.reverted) == 2
    assert [s["reverted"] for s in result.steps][:3] == [1, 2, 4] and result.steps[-1]["reverted"] == len(layers)


def test_fp16_parity(demo):
    model, _, x = demo
    deploy = to_deploy(model, SIZE)
    path = onnx_export.export(deploy, __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "m.onnx",
                              SIZE, dynamic_batch=True, metadata={})
    half = to_fp16(onnx.load(str(path)))
    onnx.checker.check_model(half)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    ref = _fp32_logits(model, x)
    logits = _run(half, x)
    assert _cosine(logits, ref) > 0.9999 and np.array_equal(logits.argmax(1), ref.argmax(1))
