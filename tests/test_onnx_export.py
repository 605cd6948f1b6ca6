"""Deploy-form ONNX: structure promised in DESIGN §3, ONNX Runtime parity, metadata, batch."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import onnx_export

from .conftest import random_model, real_images

ATOL = 1e-4


def _export(model, size, tmp_path, dynamic=False, name="m.onnx"):
    path = tmp_path / name
    onnx_export.export(to_deploy(model, size), path, size, dynamic_batch=dynamic, metadata={"arch": "x", "k": "v"})
    return path


def _ort(path, x: np.ndarray) -> np.ndarray:
    with onnx_target.TARGET.load(path, threads=2) as runner:
        return runner.infer({onnx_export.INPUT_NAME: x})[onnx_export.OUTPUT_NAME]


def _reference(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def demo_model():
    return random_model("rmt-demo", seed=5)


@pytest.fixture(scope="module")
def demo_onnx(demo_model, tmp_path_factory):
    return _export(demo_model, (64, 64), tmp_path_factory.mktemp("onnx"))


def test_graph_structure(demo_onnx, demo_model):
    graph = onnx_target.inspect_graph(demo_onnx)
    assert graph["forbidden_ops"] == [], graph["ops"]
    assert graph["max_rank"] <= 5
    assert graph["opset"] >= 17
    cfg = demo_model.cfg
    # Decomposed stages have two attention passes per block, whole stages one.
    expected = sum(d * (2 if chunk else 1) for d, chunk in zip(cfg.depths, cfg.chunk_stages))
    assert graph["attention_chains"] == expected
    ops = set(graph["ops"])
    assert not ops & {"BatchNormalization", "Slice", "Range", "Where"}, ops


def test_metadata_props(demo_onnx):
    props = {p.key: p.value for p in onnx.load(str(demo_onnx)).metadata_props}
    taps = json.loads(props.pop("rmt_deploy.taps"))  # the tap map `rmt-deploy compare` reads (rewrite.taps)
    assert props == {"arch": "x", "k": "v"}
    assert taps["stem"] and taps["head"] == ["logits"] and "stages.0.blocks.0.attn" in taps


def test_parity_on_real_and_random_images(demo_onnx, demo_model):
    x = np.concatenate([real_images((64, 64), 1), np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)])
    for i in range(len(x)):  # fixed batch 1
        ref, got = _reference(demo_model, x[i:i + 1]), _ort(demo_onnx, x[i:i + 1])
        assert np.abs(ref).max() > 0.5
        assert np.abs(ref - got).max() <= ATOL


def test_fixed_batch_rejects_other_batch(demo_onnx):
    with pytest.raises(Exception, match="(?i)dimension|shape|index"):
        _ort(demo_onnx, np.zeros((2, 3, 64, 64), np.float32))


def test_dynamic_batch_runs_batch_one_and_three(demo_model, tmp_path):
    path = _export(demo_model, (64, 64), tmp_path, dynamic=True)
    inputs = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert inputs[0].dim_param == "batch"
    assert onnx_target.inspect_graph(path)["forbidden_ops"] == []
    x = real_images((64, 64), 3)
    for batch in (x[:1], x):
        got = _ort(path, batch)
        assert got.shape == (len(batch), 10)
        assert np.abs(got - _reference(demo_model, batch)).max() <= ATOL


def test_non_square_token_label(tmp_path):
    model = random_model("rmt-demo", seed=6, token_label=True)
    path = _export(model, (64, 96), tmp_path)
    x = real_images((64, 96), 1)
    assert np.abs(_ort(path, x) - _reference(model, x)).max() <= ATOL


@pytest.mark.slow
def test_rmt_t_224(tmp_path):
    model = random_model("rmt-t", seed=7)
    path = _export(model, (224, 224), tmp_path)
    graph = onnx_target.inspect_graph(path)
    assert graph["forbidden_ops"] == [] and graph["max_rank"] <= 5 and graph["attention_chains"] == 2 * 2 + 2 * 2 + 8 + 2
    x = real_images((224, 224), 1)
    assert np.abs(_ort(path, x) - _reference(model, x)).max() <= ATOL
