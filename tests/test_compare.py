"""`rmt-deploy compare`: per-tap errors against PyTorch on real exported demo artifacts.

Artifacts come from the real export path (ONNX FP32/INT8/FP16 through ``run_export``, OpenVINO IR
converted from that ONNX the way the export does, a CoreML FP16 package from ``coreml.export``);
faults are planted in copies.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import rmt_deploy as rd
from rmt_deploy.bundled import bundled_weights
from rmt_deploy.bench.taps import JUMP_FLOOR, first_divergence, tap_error
from rmt_deploy.cli import app
from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import run_export
from rmt_deploy.jobs.plan import ExportOptions
from rmt_deploy.progress import NullProgress
from rmt_deploy.rewrite.taps import TAPS_KEY, tap_names

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "out"
    run_export(ExportOptions(targets=("onnx",), int8=True, fp16=True, out=out, bench_iters=0, calib_size=64,
                             parity_samples=4), NullProgress())
    return out


def _planted(src: Path, dst: Path, edit) -> Path:
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _scale_initializer(name: str, factor: float):
    def edit(model) -> None:
        from onnx import numpy_helper

        init = next(i for i in model.graph.initializer if i.name == name)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), name))
    return edit


def test_taps_are_recorded_in_every_onnx_artifact(demo):
    for name in ("model.onnx", "model_int8.onnx", "model_fp16.onnx"):
        meta = {p.key: p.value for p in onnx.load(str(demo / name), load_external_data=False).metadata_props}
        taps = json.loads(meta[TAPS_KEY])
        assert {"stem", "stages.0.blocks.0", "stages.2.blocks.1.attn", "stages.2.blocks.1.ffn", "head"} <= set(taps)


def test_planted_fault_is_the_first_divergence(demo, tmp_path):
    bad = _planted(demo / "model.onnx", tmp_path / "model.onnx", _scale_initializer("stages.2.blocks.1.fc2.weight", 3.0))
    clean = rd.compare(demo / "model.onnx", samples=4, write=False)
    result = rd.compare(bad, samples=4, write=False)
    assert clean.first_divergence is None, clean.to_dict()
    assert result.first_divergence == "stages.2.blocks.1"
    assert result.tap("stages.2.blocks.0").rel_l2 < 1e-4 < result.tap("stages.2.blocks.1").rel_l2
    op_group = rd.compare(bad, samples=4, level="op-group", write=False)
    assert op_group.first_divergence == "stages.2.blocks.1.ffn"  # the FFN's fc2, not the attention before it


def test_fp16_and_int8_errors_are_finite_and_in_depth_order(demo):
    fp16, int8 = rd.compare([demo / "model_fp16.onnx", demo / "model_int8.onnx"], samples=4, level="op-group",
                            write=False)
    cfg_taps = [t.name for t in fp16.taps]
    from rmt_deploy.model.checkpoint import load_model

    assert cfg_taps == tap_names(load_model(bundled_weights()).model.cfg, "op-group")
    # Measured on the demo (AMD EPYC Zen 5): FP16 taps cosine >= 0.9999995, rel L2 <= 1e-3; INT8 taps
    # cosine >= 0.9996, rel L2 <= 0.03. Each floor sits an order of magnitude of error above that.
    for result, floor, worst in ((fp16, 0.99999, 0.01), (int8, 0.995, 0.1)):
        assert not result.missing
        assert all(t.nonfinite == 0 and math.isfinite(t.rel_l2) for t in result.taps)
        assert min(t.cosine for t in result.taps) >= floor and max(t.rel_l2 for t in result.taps) <= worst
    # INT8 loses more than FP16 at the logits; both stay close.
    assert fp16.tap("head").rel_l2 < int8.tap("head").rel_l2 < 0.05
    assert int8.to_dict()["worst"] and int8.first_divergence is not None


def test_nan_in_a_tap_is_counted(demo, tmp_path):
    def nan_bias(model) -> None:
        from onnx import numpy_helper

        init = next(i for i in model.graph.initializer if i.name == "stages.1.blocks.0.fc1.bias")
        value = numpy_helper.to_array(init).copy()
        value[0] = np.nan
        init.CopyFrom(numpy_helper.from_array(value, init.name))

    bad = _planted(demo / "model.onnx", tmp_path / "model.onnx", nan_bias)
    result = rd.compare(bad, samples=2, level="op-group", out=tmp_path / "cmp")
    assert result.tap("stages.1.blocks.0.norm2").nonfinite == 0
    assert result.tap("stages.1.blocks.0.ffn").nonfinite > 0 and result.tap("stages.1.blocks.0.ffn").rel_l2 is None
    assert result.first_divergence == "stages.1.blocks.0.ffn"
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())  # strict JSON: no NaN
    assert saved["artifacts"][0]["first_divergence"] == "stages.1.blocks.0.ffn"
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0


def test_comparator_rule():
    ref = np.ones((2, 8), np.float32)
    a, b = tap_error("a", ref, ref * 1.0001), tap_error("b", ref, ref * 1.01)
    assert first_divergence([a, b]) == "b" and b.rel_l2 == pytest.approx(0.01, rel=1e-3)
    assert first_divergence([tap_error("c", ref, ref * (1 + JUMP_FLOOR / 2))]) is None


def test_openvino_path_runs_on_the_demo(demo, tmp_path):
    pytest.importorskip("openvino")
    from rmt_deploy.targets import openvino

    # OpenVINO converts the standard model.onnx, keeping its tensor names and so its tap map.
    meta = {p.key: p.value for p in onnx.load(str(demo / "model.onnx"), load_external_data=False).metadata_props}
    xml = openvino.save(openvino.convert(demo / "model.onnx"), tmp_path / "model.xml", {**meta, "precision": "fp32"})
    result = rd.compare(xml, samples=2, level="block", write=False, threads=1)
    assert not result.missing and result.runtime == "openvino CPU"
    assert all(t.nonfinite == 0 and t.rel_l2 < 1e-3 for t in result.taps)


def test_coreml_numpy_evaluator_path_runs_on_the_demo(demo, tmp_path):
    pytest.importorskip("coremltools")
    from rmt_deploy.model.checkpoint import load_model
    from rmt_deploy.rewrite import to_deploy
    from rmt_deploy.targets import coreml

    meta = {p.key: p.value for p in onnx.load(str(demo / "model.onnx"), load_external_data=False).metadata_props}
    del meta[TAPS_KEY]  # the package records its own, from the CoreML conversion
    deploy = to_deploy(load_model(bundled_weights()).model, (64, 64))
    path = coreml.export(deploy, tmp_path / "model_fp16.mlpackage", (64, 64), precision="fp16", metadata=meta,
                         settings=coreml.CoreMLSettings())
    result = rd.compare(path, samples=2, level="stage", write=False)
    assert not result.missing and "numpy" in result.runtime
    assert [t.name for t in result.taps] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert all(t.nonfinite == 0 and t.rel_l2 < 5e-3 for t in result.taps)  # FP16 storage


def test_isolate_ranks_a_badly_calibrated_block_first(demo, tmp_path):
    from rmt_deploy.jobs.isolate import group_layers, onnx_ops
    from rmt_deploy.quant.encode import GraphIndex, quantized_layers
    from rmt_deploy.rewrite.taps import decode_taps

    target = "stages.1.blocks.0"

    def coarse_scale(model) -> None:
        """Calibrate one block's first layer badly: its input quantizer's step 40x too coarse."""
        meta = {p.key: p.value for p in model.metadata_props}
        groups = group_layers(onnx_ops(model.graph), quantized_layers(model), tap_names_for_demo(), decode_taps(meta))
        node = next(n for n in model.graph.node if n.name == groups[target][0])
        idx = GraphIndex(model.graph)
        dq = idx.parent(node, 0)
        q = idx.producer[dq.input[0]]
        scales = {dq.input[1], q.input[1]}
        for init in model.graph.initializer:
            if init.name in scales:
                from onnx import numpy_helper

                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(40), init.name))

    bad = _planted(demo / "model_int8.onnx", tmp_path / "model_int8.onnx", coarse_scale)
    result = rd.compare(bad, samples=4, isolate=True, write=False)
    assert result.isolate[0]["tap"] == target, result.isolate
    assert result.tap(target).isolated_rel_l2 == result.isolate[0]["rel_l2"]


def tap_names_for_demo() -> list[str]:
    from rmt_deploy.model.checkpoint import load_model

    return tap_names(load_model(bundled_weights()).model.cfg, "block")


def test_check_gates_on_a_taps_baseline(demo, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(demo, folder)
    rd.compare(folder / "model.onnx", samples=2)
    baseline = tmp_path / "good.json"
    shutil.copy(folder / "compare.json", baseline)
    assert rd.check(folder / "report.json", taps_baseline=baseline).passed
    _planted(folder / "model.onnx", folder / "model.onnx", _scale_initializer("stages.2.blocks.1.fc2.weight", 3.0))
    rd.compare(folder / "model.onnx", samples=2)
    result = runner.invoke(app, ["check", str(folder / "report.json"), "--taps-baseline", str(baseline), "--json"])
    assert result.exit_code == 1
    taps = [r for r in json.loads(result.stdout)["results"] if r["check"] == "taps"]
    assert taps[0]["outcome"] == "fail" and "stages.2.blocks.1" in taps[0]["reason"]
    missing = runner.invoke(app, ["check", str(demo / "report.json"), "--taps-baseline", str(baseline)])
    assert missing.exit_code == 2 and "run `rmt-deploy compare" in missing.output


def test_cli_json_table_and_plot(demo, tmp_path):
    result = runner.invoke(app, ["compare", str(demo / "model_int8.onnx"), "--level", "stage", "-n", "2", "--json",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["artifacts"][0]
    assert {"name", "cosine", "max_abs", "rel_l2", "nonfinite"} <= set(entry["taps"][0])
    assert "first_divergence" in entry and entry["worst"] and entry["rule"]
    assert (tmp_path / "compare.png").exists() and (tmp_path / "compare.json").exists()
    human = runner.invoke(app, ["compare", str(demo / "model_int8.onnx"), "--level", "stage", "-n", "2", "--out",
                                str(tmp_path)])
    assert human.exit_code == 0 and "first divergence" in human.stdout and "stages.3" in human.stdout


@pytest.mark.parametrize("args, message", [
    (["--level", "layer"], "unknown --level 'layer'"),
    (["--samples", "0"], "--samples"),
])
def test_bad_flags_are_one_line(demo, tmp_path, args, message):
    result = runner.invoke(app, ["compare", str(demo / "model_int8.onnx"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_artifact_without_metadata_needs_weights(demo, tmp_path):
    def strip(model) -> None:
        del model.metadata_props[:]

    bare = _planted(demo / "model.onnx", tmp_path / "bare.onnx", strip)
    result = runner.invoke(app, ["compare", str(bare)])
    assert result.exit_code == 2 and "no rmt-deploy metadata" in result.output and "--weights" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "compare.json").exists() and not (tmp_path / "compare.png").exists()


def test_images_of_the_wrong_size(demo, tmp_path):
    with pytest.raises(UserInputError, match=r"takes \(N, 3, 64, 64\)"):
        rd.compare(demo / "model.onnx", images=np.zeros((2, 3, 32, 32), np.float32), write=False)
    x = np.zeros((2, 3, 64, 64), np.float32)  # the right size works (arrays are taken as preprocessed)
    assert rd.compare(demo / "model.onnx", images=x, write=False).images == 2
