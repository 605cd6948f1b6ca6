"""The ExecuTorch target: the deploy form's ExecuTorch encoding, .pte programs lowered to XNNPACK
(FP32 and PT2E INT8) and run by ExecuTorch's own runtime, their metadata, and what is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import ExportOptions, run_export
from rmt_deploy.jobs.plan import plan
from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.model.checkpoint import load_model
from rmt_deploy.rewrite import to_deploy

from .conftest import random_model, randomize_, real_images, run

pytest.importorskip("executorch", reason='executorch not installed (pip install -e ".[executorch]")')

from rmt_deploy.quant import pt2e  # noqa: E402 — after the skip: both need executorch to run
from rmt_deploy.targets import executorch as et  # noqa: E402

ATOL = 1e-4


@pytest.mark.parametrize("variant, size", [("rmt-t", (64, 96)), ("rmt-b", (96, 64)), ("rmt-s-tl", (64, 64))])
def test_encoding_matches_the_reference(variant, size):
    # rmt-t: decomposed and whole attention; rmt-b: layer scale; rmt-s-tl: the token-label head.
    model = random_model(variant, seed=5)
    x = torch.from_numpy(np.concatenate([real_images(size, 2), np.random.default_rng(0).standard_normal(
        (1, 3, *size)).astype(np.float32)]))
    with torch.inference_mode():
        ref, got = model(x), to_deploy(model, size, encoding="xnnpack")(x)
    assert ref.abs().max() > 0.5
    assert (ref - got).abs().max().item() <= ATOL


def test_backbone_encoding_matches_the_reference():
    backbone = randomize_(create_backbone("rmt-t", out_indices=(1, 2, 3)), seed=2).eval()
    x = torch.from_numpy(real_images((64, 96), 2))
    with torch.inference_mode():
        ref, got = backbone(x), to_deploy(backbone, (64, 96), encoding="xnnpack")(x)
    assert len(ref) == len(got) == 3
    for r, g in zip(ref, got):
        assert r.shape == g.shape and (r - g).abs().max().item() <= ATOL


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("executorch") / "out"
    report = run_export(ExportOptions(targets=("executorch",), int8=True, fp32=True, out=out, bench_iters=3,
                                      calib_size=64))
    return report, out


def test_export_writes_verified_xnnpack_programs(exported):
    report, out = exported
    entries = {a["precision"]: a for a in report["artifacts"]}
    assert set(entries) == {"fp32", "int8"} and all(a["status"] == "ok" for a in entries.values())
    assert entries["fp32"]["parity"]["max_abs"] <= ATOL
    assert entries["int8"]["parity"]["cosine"] >= 0.99 and entries["int8"]["accuracy"]["agreement"] >= 0.98
    for precision, a in entries.items():
        assert a["verified_with"] == "executorch xnnpack" and a["latency_ms"]["p50"] > 0
        # The whole network in one XNNPACK call: nothing left to the portable kernels.
        assert a["delegation"]["delegated_share"] == 1.0 and a["delegation"]["portable_ops"] == {}
        assert a["graph"]["delegates"] == ["XnnpackBackend"] and a["graph"]["delegate_calls"] == 1
    q = entries["int8"]["quantization"]
    assert q["calibrator"].startswith("pt2e") and q["calib_images"] == 64 and 100 <= q["max_abs_weight"] <= 127
    assert entries["int8"]["size_bytes"] < 0.5 * entries["fp32"]["size_bytes"]
    md = (out / "report.md").read_text()
    assert "100% of compute nodes in 1 xnnpack delegate call(s)" in md and "| executorch | int8 | ok |" in md


def test_metadata_travels_in_the_program(exported):
    _, out = exported
    info = et.describe(out / "model_int8.pte")
    meta = info["metadata"]
    assert info["input_shape"] == [1, 3, 64, 64] and not info["dynamic_batch"]
    assert meta["arch"] == "rmt-demo" and meta["precision"] == "int8" and meta["delegate"] == "xnnpack"
    assert json.loads(meta["output_names"]) == ["logits"] and meta["input_size"] == "64x64"
    assert meta["source_sha256"] and len(json.loads(meta["class_names"])) == 10
    assert meta["int8_exact_on"] == pt2e.EXACT_ON and "pt2e" in meta["quantization"]


def test_runtime_matches_pytorch_on_real_images(exported, demo_weights):
    _, out = exported
    model = load_model(demo_weights).model
    x = real_images((64, 64), 6)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    with et.TARGET.load(out / "model.pte", threads=1) as runner:
        got = np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
        with pytest.raises(UserInputError, match=r"takes input of shape \(1, 3, 64, 64\)"):
            runner.infer({"input": x[:2]})
    assert np.abs(got - ref).max() <= ATOL


def test_load_predict_and_bench(exported):
    import rmt_deploy as rd
    from rmt_deploy.bundled import bundled_images

    _, out = exported
    model = rd.load(out / "model_int8.pte")
    images = sorted((bundled_images("val") / "3").iterdir())[:4]
    assert [p.indices[0] for p in model.predict(images)] == [3, 3, 3, 3]
    result = run("bench", str(out / "model.pte"), str(out / "model_int8.pte"), "--iters", "3", "--warmup", "1",
                 "--min-time", "0.1", "--no-reference", "--out", str(out.parent / "bench"))
    assert result.returncode == 0, result.stderr
    rows = json.loads((out.parent / "bench" / "report.json").read_text())["artifacts"]
    assert {(r["precision"], r["status"]) for r in rows} == {("fp32", "ok"), ("int8", "ok")}
    assert all(r["latency_ms"]["runtime"] == "executorch xnnpack" and r["latency_ms"]["p50"] > 0 for r in rows)


def test_compare_says_why_it_cannot_tap(exported):
    result = run("compare", str(exported[1] / "model_int8.pte"))
    assert result.returncode == 2 and "one XNNPACK delegate call" in result.stderr
    assert "Traceback" not in result.stderr


def test_program_without_metadata_needs_preprocess(tmp_path):
    import rmt_deploy as rd
    from rmt_deploy.data.images import Preprocess

    program, _ = et.lower(torch.nn.Conv2d(3, 4, 3).eval(), (1, 3, 32, 32), "xnnpack", {})
    path = tmp_path / "foreign.pte"
    path.write_bytes(program)
    assert et.describe(path)["metadata"] == {}
    with pytest.raises(UserInputError, match="no rmt-deploy metadata"):
        rd.load(path)
    assert rd.load(path, preprocess=Preprocess((32, 32))) is not None


@pytest.mark.parametrize("flags, message", [
    ({"target_options": {"executorch": et.ExecuTorchOptions("metal")}}, "--delegate 'metal' is unknown"),
    ({"int8": True, "target_options": {"executorch": et.ExecuTorchOptions("vulkan")}}, "writes FP32 programs"),
    ({"int8": True, "statistic": "quantile"}, "--statistic quantile is not available for ExecuTorch INT8"),
    ({"fp16": True}, "does not support fp16"),
])
def test_bad_requests_fail_before_any_work(flags, message, tmp_path):
    with pytest.raises(UserInputError, match=message):
        plan(ExportOptions(targets=("executorch",), out=tmp_path / "out", **flags))


def test_delegate_flag_needs_the_target(tmp_path):
    result = run("export", "--target", "onnx", "--delegate", "vulkan", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--delegate is an ExecuTorch option; add --target executorch" in result.stderr
    assert not (tmp_path / "out").exists()


def test_backbone_program_matches_pytorch_per_map(tmp_path):
    report = run_export(ExportOptions(targets=("executorch",), task="backbone", img_size=(64, 96), out_indices=(1, 2, 3),
                                      out=tmp_path / "out", bench_iters=0, parity_samples=4))
    (entry,) = report["artifacts"]
    assert entry["status"] == "ok" and entry["parity"]["max_abs"] <= ATOL
    assert set(entry["parity"]["outputs"]) == {"feat1", "feat2", "feat3"}
    assert entry["delegation"]["portable_ops"] == {}


def test_vulkan_program_is_written_not_run(tmp_path):
    report = run_export(ExportOptions(targets=("executorch",), out=tmp_path / "out", bench_iters=0, parity_samples=2,
                                      target_options={"executorch": et.ExecuTorchOptions("vulkan")}))
    (entry,) = report["artifacts"]
    assert entry["status"] == "skipped" and "not run here" in entry["reason"] and entry["parity"] is None
    assert entry["path"] == "model.pte" and entry["delegation"]["delegated_share"] == 1.0
    assert et.inspect_program(tmp_path / "out" / "model.pte")["delegates"] == ["VulkanBackend"]
    with pytest.raises(UserInputError, match="lowered to ExecuTorch's vulkan backend"):
        et.TARGET.load(tmp_path / "out" / "model.pte").activate()


def test_reverted_layers_run_in_float_on_the_runtime(demo_weights, tmp_path):
    """The accuracy-aware search's edits (``revert_layers``): every layer reverted gives the FP32 program
    back; a few reverted (fc2 reads an int8 dwconv's output, the convs sit between permutes) still lower
    into one XNNPACK call with those layers in float."""
    model = to_deploy(load_model(demo_weights).model, (64, 64), encoding="xnnpack")
    x = real_images((64, 64), 3)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    calibrated = pt2e.calibrate(model, (1, 3, 64, 64), real_images((64, 64), 8))
    layers = pt2e.quantized_layers(calibrated)
    assert len(layers) == 54 and "stages.0.blocks.0.fc2" in layers

    def run(candidate) -> np.ndarray:
        program, delegation = et.lower(pt2e.convert(candidate), (1, 3, 64, 64), "xnnpack", {})
        assert delegation["portable_ops"] == {} and delegation["delegate_calls"] == 1
        (tmp_path / "c.pte").write_bytes(program)
        with et.ExecuTorchRunner(tmp_path / "c.pte", 1) as runner:
            return np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])

    some = ["stages.0.blocks.0.fc2", "stages.1.blocks.0.pos.conv", "stages.0.blocks.0.attn.q"]
    partial = pt2e.copy_graph(calibrated)
    assert pt2e.revert_layers(partial, some) == some
    assert set(pt2e.quantized_layers(partial)) == set(layers) - set(some)
    assert np.abs(run(partial) - ref).max() > 1e-3  # the other 51 layers still int8
    everything = pt2e.copy_graph(calibrated)
    pt2e.revert_layers(everything, layers)
    assert pt2e.quantized_layers(everything) == []
    assert np.abs(run(everything) - ref).max() <= 1e-5


def test_damaged_programs_are_refused_in_one_line_in_process(exported, tmp_path):
    """A cut program, and one whose flatbuffer is overwritten behind an intact header, are refused
    (the format check, then ExecuTorch's own verifier) without taking the process down."""
    import rmt_deploy as rd

    _, out = exported
    data = (out / "model_int8.pte").read_bytes()
    cut, scrambled = tmp_path / "cut.pte", tmp_path / "scrambled.pte"
    cut.write_bytes(data[: len(data) // 3])
    body = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    scrambled.write_bytes(data[:40] + body + data[40 + len(body):])
    for path in (cut, scrambled):
        with pytest.raises(UserInputError, match=path.name):
            rd.load(path)
