"""`--target onnx` writes standard ONNX that a second consumer reads; `--target onnxruntime` writes
ONNX Runtime's own encoding under its own name (``model.ort.onnx``) and says what it needs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import rmt_deploy as rd
from rmt_deploy.bench.parity import compare_logits
from rmt_deploy.bundled import bundled_images
from rmt_deploy.errors import BackendUnavailable
from rmt_deploy.jobs.plan import ExportOptions, plan
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import TARGETS, resolve_target, target_for_path
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import onnx_export
from rmt_deploy.targets.onnx_opset import lower_opset

from .conftest import random_model, real_images, run

FAST = dict(bench_iters=0, parity_samples=4, calib_size=16)
STANDARD = ("model.onnx", "model_int8.onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> rd.Report:
    return rd.export(targets=["onnx", "onnxruntime"], int8=True, out=tmp_path_factory.mktemp("std") / "out", **FAST)


def _openvino(path, x: np.ndarray) -> np.ndarray:
    """The file through OpenVINO's ONNX frontend, compiled for exact f32 (the ONNX is what is checked here)."""
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(x[i:i + 1])[0] for i in range(len(x))])


def _reference(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_names_are_kept_apart():
    assert resolve_target("onnx").name == "onnx" and resolve_target("ort").name == "onnxruntime"
    assert resolve_target("onnxruntime") is TARGETS["onnxruntime"] and TARGETS["onnx"].aliases == ()
    assert target_for_path("out/model_int8.ort.onnx").name == "onnxruntime"
    assert target_for_path("out/model_int8.onnx").name == "onnx"
    assert TARGETS["onnxruntime"].artifact_path(Path("o"), "int8").name == "model_int8.ort.onnx"


@pytest.mark.parametrize("name", STANDARD)
def test_standard_files_hold_ai_onnx_ops_only(exported, name):
    path = exported.report_path.parent / name
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", onnx_export.OPSET)] and onnx_export.OPSET == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["encoding"] == "generic" and meta["domains"] == "ai.onnx" and meta["opset"] == "17"
    assert "requires" not in meta
    entry = exported.artifact("onnx", "int8" if "int8" in name else "fp32")
    assert entry.details["domains"] == "ai.onnx" and entry.details["opset"] == 17 and "requires" not in entry.details


@pytest.mark.parametrize("name", STANDARD)
def test_openvino_reads_and_runs_the_standard_files(exported, name):
    folder = exported.report_path.parent
    with rd.load(folder / name) as model:  # what ONNX Runtime computes from the same file
        x = np.stack([model.tensor(p) for p in sorted(bundled_images("val").rglob("*.png"))[::45]])
        ours = np.concatenate([model.runner.infer({model.runner.input_names()[0]: x[i:i + 1]})["logits"]
                               for i in range(len(x))])
    theirs = _openvino(folder / name, x)
    if "int8" in name:  # the same Q/DQ arithmetic in another runtime's int8 kernels
        assert compare_logits(ours, theirs)["cosine"] > 0.999 and (ours.argmax(1) == theirs.argmax(1)).all()
    else:
        assert np.abs(ours - theirs).max() <= 1e-4


def test_openvino_refuses_the_onnxruntime_encoding(exported):
    ov = pytest.importorskip("openvino")
    folder = exported.report_path.parent
    with pytest.raises(Exception, match="Attention|RotaryEmbedding"):
        ov.Core().read_model(str(folder / "model.ort.onnx"))  # why it is a target of its own
    for precision in ("fp32", "int8"):
        entry = exported.artifact("onnxruntime", precision)
        assert entry.ok and entry.path.endswith(".ort.onnx") and entry.details["requires"] == onnx_export.FUSED_REQUIRES
        meta = {p.key: p.value for p in onnx.load(entry.path).metadata_props}
        assert meta["requires"] == onnx_export.FUSED_REQUIRES and meta["domains"] == "ai.onnx,com.microsoft"
    with pytest.raises(rd.UserInputError, match=r"ONNX Runtime-only.*load model_int8\.onnx \(standard ONNX\)"):
        rd.load(folder / "model_int8.ort.onnx", runtime="CPU")  # an OpenVINO device name
    assert "model.ort.onnx" in (folder / "report.md").read_text() and "needs onnxruntime>=1.23" in \
        (folder / "report.md").read_text()


@pytest.mark.parametrize("variant,size", [("rmt-demo", (64, 96)), pytest.param("rmt-t", (224, 224),
                                                                            marks=pytest.mark.slow)])
def test_second_consumer_parity_with_pytorch(variant, size, tmp_path):
    model = random_model(variant, seed=21)
    x = np.concatenate([np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32),
                        real_images(size, 1)])
    path = onnx_export.export(to_deploy(model, size), tmp_path / "m.onnx", size, dynamic_batch=True, metadata={})
    ref = _reference(model, x)
    assert np.abs(ref).max() > 0.5
    assert np.abs(_openvino(path, x) - ref).max() <= 1e-4
    with onnx_target.TARGET.load(path, threads=2) as runner:
        assert np.abs(runner.infer({"input": x})["logits"] - ref).max() <= 1e-4


def test_an_old_onnxruntime_is_one_line(monkeypatch, tmp_path):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.22.1")
    too_old = r"onnxruntime 1\.22\.1 is too old .*onnxruntime>=1\.23.*--target onnx"
    with pytest.raises(BackendUnavailable, match=too_old):
        plan(ExportOptions(targets=("onnxruntime",), out=tmp_path / "never"))
    plan(ExportOptions(targets=("onnx",), out=tmp_path / "never"))  # standard ONNX needs no particular version
    assert not (tmp_path / "never").exists()


def test_onnxruntime_target_takes_no_fp16(tmp_path):
    result = run("export", "--target", "ort", "--fp16", "--out", str(tmp_path / "never"))
    assert result.returncode == 2 and "does not support fp16" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


def _graph(node, opset: int, inputs, outputs, initializers=()):
    from onnx import helper

    graph = helper.make_graph([node], "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_lower_opset_rewrites_split_and_reduce_and_refuses_the_rest():
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "b")]
    reduced = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 1])]
    split = _graph(helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), 18, [x], outs)
    lowered = lower_opset(split, 17)
    onnx.checker.check_model(lowered, full_check=True)
    assert lowered.opset_import[0].version == 17
    assert not any(a.name == "num_outputs" for a in lowered.graph.node[0].attribute)

    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    mean = _graph(helper.make_node("ReduceMean", ["x", "axes"], ["a"], keepdims=1), 18, [x], reduced, [axes])
    lowered = lower_opset(mean, 17)
    onnx.checker.check_model(lowered, full_check=True)
    assert list(lowered.graph.node[0].input) == ["x"] and lowered.graph.node[0].attribute[-1].ints == [1]

    odd = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    with pytest.raises(ValueError, match="Split into 2 parts of a dimension of 5"):
        lower_opset(_graph(helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), 18, [odd], outs), 17)
    pads = numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads")
    pad = _graph(helper.make_node("Pad", ["x", "pads", "", "axes"], ["a"]), 18, [x], reduced, [pads, axes])
    with pytest.raises(ValueError, match="Pad changed after opset 17"):
        lower_opset(pad, 17)
