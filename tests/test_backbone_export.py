"""Backbone export (``--task backbone``): deploy form, every target, per-output verification,
letterbox preprocessing, the size that detection needs, bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from rmt_deploy.data.images import Preprocess
from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.rewrite import table_bytes, to_deploy
from rmt_deploy.targets.tensorrt import engine_unavailable_reason

from .conftest import mm_checkpoint, randomize_, real_images, run
from .seeded import normal

ATOL = 1e-4


def _random_backbone(variant: str, out_indices=(0, 1, 2, 3), extra_norms: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return randomize_(create_backbone(variant, out_indices, extra_norms=extra_norms), seed)


@pytest.mark.parametrize("variant", ["rmt-t", "rmt-s", "rmt-b", "rmt-l"])
def test_deploy_backbone_equals_reference(variant):
    model = _random_backbone(variant)
    size = (64, 96)  # non-square
    x = torch.cat([normal((1, 3, *size)), torch.from_numpy(real_images(size, 2))])
    deploy = to_deploy(model, size)
    with torch.inference_mode():
        ref, got = model(x), deploy(x)
    assert deploy.output_names == ("feat0", "feat1", "feat2", "feat3")
    for r, g, out in zip(ref, got, deploy.outputs()):
        assert tuple(g.shape) == (3, out["channels"], *out["shape"])
        assert r.abs().max() > 0.5 and (r - g).abs().max() <= ATOL


@pytest.mark.parametrize("indices, extra", [((1, 2, 3), True), ((2,), False), ((0, 3), True)])
def test_out_indices_subsets_and_raw_stages(indices, extra):
    model = _random_backbone("rmt-t", indices, extra_norms=extra, seed=3)
    deploy = to_deploy(model, (64, 64))
    assert len(deploy.stages) == indices[-1] + 1  # later stages feed nothing
    x = normal((2, 3, 64, 64))
    with torch.inference_mode():
        ref, got = model(x), deploy(x)
    assert deploy.output_names == tuple(f"feat{i}" for i in indices)
    assert max((r - g).abs().max().item() for r, g in zip(ref, got)) <= ATOL


def test_decay_tables_stay_linear_in_the_file():
    """The whole-attention decay is built in the graph; the module holds only per-axis tables."""
    model = _random_backbone("rmt-t")
    deploy = to_deploy(model, (800, 1344))
    buffers = sum(b.numel() * 4 for b in deploy.buffers())
    assert buffers == table_bytes(model.cfg, (800, 1344)) < 20e6  # the 2-D table alone would be 564 MB


def test_letterbox_keeps_the_aspect_and_pads_bottom_right():
    from PIL import Image

    image = Image.fromarray(np.full((100, 200, 3), 255, np.uint8))  # 2:1, white
    pre = Preprocess((64, 96), resize="letterbox", interpolation="bilinear")
    x = pre(image)
    white = (1.0 - np.asarray(pre.mean)) / np.asarray(pre.std)
    assert x.shape == (3, 64, 96)
    assert np.allclose(x[:, :48, :], white[:, None, None], atol=1e-5)  # 96 wide → 48 high
    assert np.all(x[:, 48:, :] == 0.0)  # zeros after normalisation, as mmdet pads
    with pytest.raises(ValueError, match="resize"):
        Preprocess((64, 64), resize="stretch")


@pytest.fixture(scope="module")
def demo_backbone_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("backbone") / "out"
    result = run("export", "--task", "backbone", "--target", "onnx,openvino,coreml,trt", "--int8", "--fp16",
                 "--out", str(out), "--bench-iters", "2", "--parity-samples", "8", "--calib-size", "32")
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "report.json").read_text())


def test_every_target_exports_the_demo_backbone(demo_backbone_run):
    out, report = demo_backbone_run
    model = report["model"]
    assert model["task"] == "backbone" and model["num_classes"] is None and not model["extra_norms"]
    assert [o["name"] for o in model["outputs"]] == ["feat0", "feat1", "feat2", "feat3"]
    assert [o["stride"] for o in model["outputs"]] == [4, 8, 16, 32]
    assert model["preprocess"]["resize"] == "letterbox"
    done = {(a["target"], a["precision"]): a for a in report["artifacts"]}
    assert set(done) == {("onnx", "fp32"), ("onnx", "int8"), ("onnx", "fp16"), ("openvino", "int8"),
                         ("openvino", "fp16"), ("coreml", "int8"), ("coreml", "fp16"), ("trt", "int8"), ("trt", "fp16")}
    for (target, precision), a in done.items():
        if target == "trt":  # the ready ONNX, its readiness and the TensorRT-RTX parse+build; an engine on a GPU
            assert a["readiness"]["status"] == "ready"
            assert set(a["onnx_parity"]["outputs"]) == {"feat0", "feat1", "feat2", "feat3"}
            gpu_missing = engine_unavailable_reason()
            assert a["status"] == ("skipped" if gpu_missing else "ok"), a.get("reason")
            continue
        assert a["status"] == "ok", a.get("reason")
        outputs = a["parity"]["outputs"]
        assert set(outputs) == {"feat0", "feat1", "feat2", "feat3"}
        assert a["parity"]["cosine"] == min(o["cosine"] for o in outputs.values())
        assert all(np.isfinite(o["max_abs"]) for o in outputs.values())
    assert done[("onnx", "fp32")]["parity"]["max_abs"] <= ATOL
    assert done[("onnx", "int8")]["parity"]["cosine"] > 0.99
    proto = onnx.load(str(out / "model.onnx"))
    assert [o.name for o in proto.graph.output] == ["feat0", "feat1", "feat2", "feat3"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "backbone" and meta["resize"] == "letterbox"
    assert [o["channels"] for o in json.loads(meta["outputs"])] == [o["channels"] for o in model["outputs"]]
    assert "Feature maps" in (out / "report.md").read_text()


def test_python_api_runs_a_backbone_artifact_and_predict_says_what_to_use(demo_backbone_run):
    import rmt_deploy as rd
    from rmt_deploy.errors import UserInputError

    out, _ = demo_backbone_run
    with rd.load(out / "model_int8.onnx") as model:
        assert model.output_names() == ["feat0", "feat1", "feat2", "feat3"]
        maps = model.runner.infer({"input": model.tensor(real_images((64, 64), 1)[0])[None]})
        assert [maps[n].shape[1] for n in model.output_names()] == [32, 64, 96, 128]
        with pytest.raises(UserInputError, match="is a backbone"):
            model.predict(real_images((64, 64), 1))
    from rmt_deploy.bundled import bundled_images

    result = run("predict", str(out / "model.onnx"), str(bundled_images("val")))
    assert result.returncode == 2 and "is a backbone" in result.stderr
    result = run("compare", str(out / "model_int8.onnx"))
    assert result.returncode == 2 and "is a backbone" in result.stderr, result.stderr


def test_check_gates_on_each_feature_map(demo_backbone_run):
    out, _ = demo_backbone_run
    passed = run("check", str(out / "report.json"), "--min-cosine", "0.9", "--json")
    assert passed.returncode == 0, passed.stdout
    checks = [r["check"] for r in json.loads(passed.stdout)["results"] if r["artifact"] == "onnx/int8"]
    assert {"cosine feat0", "cosine feat1", "cosine feat2", "cosine feat3"} <= set(checks)
    failed = run("check", str(out / "report.json"), "--min-cosine", "0.9999999")
    assert failed.returncode == 1


def test_int8_feature_budget_reverts_layers_until_every_map_fits(tmp_path):
    """--min-cosine: accuracy-aware INT8 without labels, judged by the worst feature map."""
    out = tmp_path / "out"
    result = run("export", "--task", "backbone", "--int8", "--min-cosine", "0.99999", "--out", str(out),
                 "--bench-iters", "0", "--parity-samples", "8", "--calib-size", "32")
    assert result.returncode == 0, result.stderr
    int8 = next(a for a in json.loads((out / "report.json").read_text())["artifacts"] if a["precision"] == "int8")
    aware = int8["accuracy_aware"]
    assert aware["initial_cosine"] < 0.99999 and aware["ranking"] and aware["reverted_layers"]
    assert aware["fits"] and aware["final_cosine"] == int8["parity"]["cosine"] >= 0.99999
    assert "worst cosine" in (out / "report.md").read_text()


def test_detection_checkpoint_exports_with_extra_norms(tmp_path):
    path = tmp_path / "maskrcnn_rmt_t_1x.pth"
    mm_checkpoint(path, ("rpn_head", "roi_head"))
    out = tmp_path / "out"
    result = run("export", "--task", "backbone", "-w", str(path), "--img-size", "64x96", "--out-indices", "1,2,3",
                 "--out", str(out), "--bench-iters", "0", "--parity-samples", "4")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["extra_norms"] and report["model"]["checkpoint_kind"] == "detection"
    assert set(report["model"]["ignored_parts"]) == {"neck", "rpn_head", "roi_head"}
    (fp32,) = report["artifacts"]
    assert fp32["status"] == "ok" and fp32["parity"]["max_abs"] <= ATOL
    assert list(fp32["parity"]["outputs"]) == ["feat1", "feat2", "feat3"]


@pytest.mark.parametrize("args, message", [
    (["--task", "backbone", "--out-indices", "4"], "--out-indices"),
    (["--out-indices", "1,2"], "add --task backbone"),
    (["--task", "detect"], "--task 'detect' is unknown"),
    (["--task", "backbone", "--max-drop", "0.5"], "use --min-cosine"),
    (["--task", "backbone", "--min-cosine", "1.5"], "--min-cosine 1.5 must be in (0, 1]"),
    (["--max-drop", "0.5", "--min-cosine", "0.99"], "give one"),
])
def test_bad_backbone_flags(tmp_path, args, message):
    result = run("export", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_detection_checkpoint_as_classifier_points_to_the_backbone_task(tmp_path):
    path = tmp_path / "maskrcnn_rmt_t_1x.pth"
    mm_checkpoint(path, ("rpn_head", "roi_head"))
    result = run("export", "-w", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--task backbone" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_rmt_t_at_detection_size_exports_a_small_onnx(tmp_path):
    """800x1344: stage 3's 4,200-token decay would be a 564 MB constant; the file stays under 100 MB and
    ONNX Runtime (which builds the table at load) matches PyTorch."""
    import onnxruntime as ort

    from rmt_deploy.targets.onnx_export import export

    model = _random_backbone("rmt-t")
    size = (800, 1344)
    path = export(to_deploy(model, size), tmp_path / "backbone.onnx", size, dynamic_batch=False, metadata={})
    assert path.stat().st_size < 100e6
    x = real_images(size, 1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    assert max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref)) <= ATOL
    # OpenVINO's converter folds the tables back (754 MB of .bin); the IR writer rebuilds them.
    from rmt_deploy.targets.openvino import convert, save

    xml = save(convert(path), tmp_path / "backbone.xml", {"precision": "fp32"})
    assert xml.with_suffix(".bin").stat().st_size < 100e6


def test_openvino_ir_rebuilds_folded_tables_exactly(tmp_path):
    """Every folded decay and rotary table of a small backbone is found and rebuilt, bit for bit."""
    import openvino as ov

    from rmt_deploy.targets.onnx_export import export
    from rmt_deploy.targets.openvino import convert, read_model, unfold_position_tables

    model = _random_backbone("rmt-t", seed=2)
    size = (64, 96)
    path = export(to_deploy(model, size), tmp_path / "b.onnx", size, dynamic_batch=False, metadata={})
    folded = convert(path)
    rebuilt = folded.clone()
    # rmt-t: stages 3-4 have whole attention (2 decay tables); rotary tables of 4 stages, per use.
    assert unfold_position_tables(rebuilt, min_bytes=1) >= 2 + 4
    ov.save_model(rebuilt, str(tmp_path / "b.xml"), compress_to_fp16=False)
    x = real_images(size, 1)
    core = ov.Core()
    want = core.compile_model(folded, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)
    got = core.compile_model(read_model(tmp_path / "b.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)
    for i in range(4):
        np.testing.assert_array_equal(got[i], want[i])


@pytest.mark.slow
def test_tensorrt_ready_backbone_parses_and_builds_at_512(tmp_path):
    """The TensorRT-bound FP16 ONNX of the demo backbone at 512x512: readiness, the TensorRT-RTX
    parse+build proxy (no GPU needed) and ONNX Runtime parity on every feature map."""
    pytest.importorskip("tensorrt_rtx")
    out = tmp_path / "out"
    result = run("export", "--task", "backbone", "--img-size", "512", "--target", "trt", "--fp16", "--out", str(out),
                 "--bench-iters", "0", "--parity-samples", "2")
    assert result.returncode == 0, result.stderr
    (fp16,) = json.loads((out / "report.json").read_text())["artifacts"]
    assert fp16["readiness"]["status"] == "ready", fp16["readiness"]
    build = fp16["readiness"]["rtx_build"]
    assert build["parsed"] and build["built"], build
    assert set(fp16["onnx_parity"]["outputs"]) == {"feat0", "feat1", "feat2", "feat3"}
    assert fp16["onnx_parity"]["cosine"] > 0.999
    assert [o.name for o in onnx.load(str(out / "model_fp16.trt.onnx")).graph.output] == ["feat0", "feat1", "feat2",
                                                                                          "feat3"]
