"""The ONNX Runtime encoding of the deploy form (``encoding="onnxruntime"``, ``rewrite.fused``):
fused Attention and RotaryEmbedding, verified against the reference like every artifact."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import onnx_export

from .conftest import random_model, randomize_, real_images

ATOL = 1e-4


def _inputs(size, n: int = 2) -> np.ndarray:
    noise = np.random.default_rng(3).standard_normal((1, 3, *size)).astype(np.float32)
    return np.concatenate([noise, real_images(size, n - 1)])


def _reference(model, x: np.ndarray):
    with torch.inference_mode():
        return model(torch.from_numpy(x))


def _export(model, size, path, dynamic=False):
    return onnx_export.export(to_deploy(model, size, encoding="onnxruntime"), path, size, dynamic_batch=dynamic,
                              metadata={})


def _ort(path, x: np.ndarray) -> dict:
    with onnx_target.TARGET.load(path, threads=2) as runner:
        return runner.infer({onnx_export.INPUT_NAME: x})


@pytest.mark.parametrize("variant", ["rmt-t", "rmt-s", "rmt-b", "rmt-l", "rmt-s-tl"])
def test_eager_matches_the_reference(variant):
    model, size = random_model(variant, seed=11), (64, 96)
    x = _inputs(size)
    ref = _reference(model, x).numpy()
    assert np.abs(ref).max() > 0.5
    with torch.inference_mode():
        eager = to_deploy(model, size, encoding="onnxruntime")(torch.from_numpy(x)).numpy()
    assert np.abs(eager - ref).max() <= ATOL


def test_onnxruntime_matches_the_reference_at_any_batch(tmp_path):
    # rmt-t has decomposed (stages 1-2) and whole (3-4) attention; the other variants differ in
    # widths, depths and layer scale, which the encoding does not touch (eager test above).
    model, size = random_model("rmt-t", seed=11), (64, 96)
    x = _inputs(size, 3)
    ref = _reference(model, x).numpy()
    path = _export(model, size, tmp_path / "m.onnx", dynamic=True)
    assert np.abs(_ort(path, x)["logits"] - ref).max() <= ATOL
    assert np.abs(_ort(path, x[1:2])["logits"] - ref[1:2]).max() <= ATOL


def test_graph_has_fused_ops_and_no_shape_arithmetic(tmp_path):
    model = random_model("rmt-demo", seed=5)
    path = _export(model, (64, 64), tmp_path / "m.onnx", dynamic=True)
    graph = onnx_target.inspect_graph(path)
    cfg = model.cfg
    passes = sum(d * (2 if chunk else 1) for d, chunk in zip(cfg.depths, cfg.chunk_stages))
    assert graph["opset"] == 23 and graph["forbidden_ops"] == [] and graph["max_rank"] <= 5
    assert graph["fused_attention"] == passes and graph["attention_chains"] == 0
    assert graph["ops"]["RotaryEmbedding"] == 2 * sum(cfg.depths)  # q and k of every block
    assert "Gemm" not in graph["ops"] or graph["ops"]["Gemm"] <= 1  # linear layers stay MatMul on 4-D tokens
    assert not {"Split", "Concat"} & set(graph["ops"])  # the rotary swap of halves is gone
    props = {p.key for p in onnx.load(str(path)).metadata_props}
    assert "rmt_deploy.taps" in props


def test_backbone_outputs_match(tmp_path):
    ref = randomize_(create_backbone("rmt-t", (1, 2, 3), extra_norms=True), seed=12)
    size = (64, 96)
    x = _inputs(size)
    expected = _reference(ref, x)
    got = _ort(_export(ref, size, tmp_path / "b.onnx"), x[:1])
    for name, want in zip(("feat1", "feat2", "feat3"), expected):
        assert np.abs(got[name] - want[:1].numpy()).max() <= ATOL


@pytest.mark.slow
def test_rmt_t_224(tmp_path):
    model = random_model("rmt-t", seed=7)
    path = _export(model, (224, 224), tmp_path / "m.onnx", dynamic=True)
    x = _inputs((224, 224))
    assert np.abs(_ort(path, x)["logits"] - _reference(model, x).numpy()).max() <= ATOL
