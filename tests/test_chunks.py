"""Attention in chunks (``rewrite.chunks``): the same function as the unchunked deploy form and the
reference in every encoding, fixed and dynamic, with no full decay mask left for a runtime to fold."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rmt_deploy.rewrite import attention_bytes, chunk_plan, runtime_table_bytes, to_deploy
from rmt_deploy.rewrite.chunks import chunk_count, chunk_rows, stage_chunks
from rmt_deploy.sizes import SizeRange
from rmt_deploy.targets.onnx import inspect_graph
from rmt_deploy.targets.onnx_export import export

from .conftest import random_model, real_images
from .seeded import normal

# rmt-demo at 224x320: token grids (56, 80), (28, 40), (14, 20), (7, 10). At this budget stage 3's whole
# attention (4 heads, 280 tokens) splits its 14 query rows 3 at a time: 5 chunks, the last one of 2 rows;
# the decomposed stages split their row and column passes too.
SIZE = (224, 320)
BUDGET = 270_000
HEADS, TOKENS = 4, 14 * 20


def _inputs(size) -> torch.Tensor:
    return torch.cat([normal((1, 3, *size)), torch.from_numpy(real_images(size, 2))])


@pytest.fixture(scope="module")
def model():
    return random_model("rmt-demo")


def test_chunk_plan_follows_the_budget():
    assert chunk_count(14, 4 * HEADS * 20 * TOKENS, BUDGET) == 5
    assert stage_chunks(HEADS, 14, 20, decomposed=False, budget=BUDGET) == (5,)
    assert stage_chunks(2, 56, 80, decomposed=True, budget=BUDGET) == (12, 8)
    assert [r[:2] for r in chunk_rows(14, 5)] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 14)]
    # The chunked budget's estimates: no (heads, N, N) table, and every score tensor within the budget.
    cfg = random_model("rmt-demo").cfg
    assert runtime_table_bytes(cfg, SIZE, BUDGET) < runtime_table_bytes(cfg, SIZE) / 5
    assert attention_bytes(cfg, SIZE, BUDGET) <= BUDGET < attention_bytes(cfg, SIZE)


@pytest.mark.parametrize("encoding", ["generic", "onnxruntime", "xnnpack"])
def test_chunks_compute_what_the_reference_does(model, encoding):
    x = _inputs(SIZE)
    whole = to_deploy(model, SIZE, encoding=encoding)
    chunked = to_deploy(model, SIZE, encoding=encoding, chunk_bytes=BUDGET)
    assert chunk_plan(whole) == "1/1,1/1,1,1" and chunk_plan(chunked) == "12/8,2/1,5,1"
    with torch.inference_mode():
        ref, a, b = model(x), whole(x), chunked(x)
    assert ref.abs().max() > 0.5
    assert (b - ref).abs().max() <= 1e-4
    assert (b - a).abs().max() <= 1e-5


def _folded_constants(path, tmp_path) -> int:
    """Elements of all constants over stage 3's tokens in the graph ONNX Runtime runs (after its constant
    folding): the (heads, N, N) mask, or every chunk of it (as many elements), or only the decay's terms."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer if TOKENS in t.dims)


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["generic", "onnxruntime"])
def test_onnx_chunks_build_no_full_mask(model, encoding, tmp_path):
    x = _inputs(SIZE)
    with torch.inference_mode():
        ref = model(x).numpy()
    sizes = {}
    for budget in (None, BUDGET):
        deploy = to_deploy(model, SIZE, encoding=encoding, **({"chunk_bytes": budget} if budget else {}))
        path = export(deploy, tmp_path / f"{budget}.onnx", SIZE, dynamic_batch=True, metadata={})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got - ref).max() <= 1e-4
        sizes[budget] = _folded_constants(path, tmp_path)
        assert inspect_graph(path)["forbidden_ops"] == []
    # Unchunked, ONNX Runtime folds stage 3's (heads, N, N) mask; in chunks nothing near that size remains.
    assert sizes[None] >= HEADS * TOKENS ** 2
    assert sizes[BUDGET] < HEADS * TOKENS ** 2 / 4


@pytest.mark.slow
def test_dynamic_chunks_at_every_size(model, tmp_path):
    """A dynamic form keeps the chunk count of its largest size; at small sizes the chunks overlap
    instead of going empty (ONNX Runtime's Attention refuses zero rows).

    The ONNX Runtime encoding splits stage 3's 2 rows at 32x32 into 4 chunks: the last two keep no row.
    The generic one, at a larger budget (a smaller graph: these exports take most of the test's time),
    splits stage 1's 8 rows at 32x32 into windows of 3, the last one moved back over the second (both
    encodings share ``chunk_rows``, so the zero-row case is tested once)."""
    sizes = [(32, 32), (32, 96), (96, 64), (256, 256)]
    for encoding, budget, plan in (("generic", 1_000_000, "3/3,1/1,2,1"), ("onnxruntime", 300_000, "8/8,1/1,4,1")):
        deploy = to_deploy(model, (96, 64), encoding=encoding, dynamic=True, largest=(256, 256), chunk_bytes=budget)
        assert chunk_plan(deploy) == plan
        path = export(deploy, tmp_path / f"{encoding}.onnx", (96, 64), dynamic_batch=True, metadata={},
                      size_range=SizeRange(32, 256))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for size in sizes:
            x = _inputs(size)
            with torch.inference_mode():
                ref = model(x).numpy()
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            assert np.abs(got - ref).max() <= 1e-4, (encoding, size)


@pytest.mark.slow
def test_executorch_chunks_stay_in_the_xnnpack_delegate(model):
    import executorch.runtime

    from rmt_deploy.targets.executorch import lower

    deploy = to_deploy(model, SIZE, encoding="xnnpack", chunk_bytes=BUDGET)
    program, delegation = lower(deploy, (1, 3, *SIZE), "xnnpack", {})
    assert delegation["portable_ops"] == {} and delegation["delegate_calls"] == 1
    method = executorch.runtime.Runtime.get().load_program(program).load_method("forward")
    x = _inputs(SIZE)[:1]
    with torch.inference_mode():
        ref = model(x)
    assert (method.execute([x])[0] - ref).abs().max() <= 1e-4


@pytest.mark.slow
def test_coreml_converts_the_chunked_form(model, tmp_path):
    """Core ML's converter traces with torch.jit.trace, which gives sizes as tensors: a fixed-size form's
    chunk offsets must stay constants. FP32 compute, run by the ML program's numpy evaluator."""
    pytest.importorskip("coremltools", reason="coremltools not installed (pip install -e '.[coreml]')")
    import json

    from rmt_deploy.targets import coreml

    deploy = to_deploy(model, SIZE, chunk_bytes=BUDGET)
    assert chunk_plan(deploy) == "12/8,2/1,5,1"
    path = coreml.export(deploy, tmp_path / "chunked.mlpackage", SIZE, precision="fp32",
                         metadata={"mean": json.dumps([0.5] * 3), "std": json.dumps([0.5] * 3), "num_classes": "10"},
                         settings=coreml.CoreMLSettings())
    x = _inputs(SIZE)
    with torch.inference_mode():
        ref = model(x).numpy()
    with coreml.TARGET.load(path) as runner:
        got = runner.infer({"input": x.numpy()})["logits"]
    assert np.abs(got - ref).max() <= 1e-4
