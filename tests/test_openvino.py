"""OpenVINO target: IR export per precision, NNCF INT8 with our policy, accuracy-aware mode,
what really ran, bench with device and hint. Real OpenVINO CPU runs throughout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rmt_deploy.jobs.export import ExportOptions, run_export
from rmt_deploy.jobs.verify import MIN_COSINE
from rmt_deploy.quant.calibrate import quantize_openvino
from rmt_deploy.quant.openvino_int8 import int8_summary, quantized_layers, revert
from rmt_deploy.quant.policy import OPENVINO_QUANTIZED_OPS, QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx_export
from rmt_deploy.targets import openvino as ov_target

from .conftest import random_model, real_images, run

pytest.importorskip("openvino", reason="openvino not installed (pip install -e '.[openvino]')")
SIZE = (64, 64)
# One thread: OpenVINO's bf16 kernels split work differently with two, which can flip a
# borderline digit from run to run; the accuracy assertions should not depend on that.
THREADS = 1


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "out"
    report = run_export(ExportOptions(targets=("openvino",), int8=True, fp16=True, fp32=True, out=out, bench_iters=3,
                                      threads=THREADS))
    return report, out


def test_demo_exports_every_precision_and_reports_what_ran(demo):
    report, out = demo
    arts = {a["precision"]: a for a in report["artifacts"]}
    assert set(arts) == {"fp32", "int8", "fp16"} and all(a["status"] == "ok" for a in arts.values()), arts
    names = sorted(p.name for p in out.iterdir())
    assert names == ["model.bin", "model.xml", "model_fp16.bin", "model_fp16.xml", "model_int8.bin",
                     "model_int8.xml", "plot.png", "report.json", "report.md"]
    fp32, fp16, int8 = arts["fp32"], arts["fp16"], arts["int8"]
    # FP32 runs as FP32 (not bf16) and matches PyTorch like the ONNX export does.
    assert fp32["execution"]["inference_precision"] == "f32" and set(fp32["execution"]["layers_by_precision"]) == {"f32"}
    assert fp32["parity"]["max_abs"] <= 1e-4
    # Every IR is verified compiled as it records (EXECUTION_MODE_HINT=ACCURACY): float layers in f32
    # on every CPU, so FP16 is judged as FP16 weights, not as bf16 arithmetic.
    for entry in arts.values():
        assert entry["compile_config"] == ov_target.VERIFIED_CONFIG == {"EXECUTION_MODE_HINT": "ACCURACY"}
        assert entry["execution"]["execution_mode"] == "ACCURACY" and entry["execution"]["inference_precision"] == "f32"
    assert fp16["parity"]["cosine"] >= 0.999 and fp16["accuracy"]["drop"] <= 0.05
    # INT8: the same accuracy budget as the ONNX INT8 path, int8 kernels really used.
    assert int8["parity"]["cosine"] >= 0.99 and int8["parity"]["top1_agreement"] >= 0.99
    assert int8["accuracy"]["drop"] <= 0.3 and int8["accuracy"]["agreement"] >= 0.99
    assert int8["execution"]["layers_by_precision"].get("i8", 0) > 0
    assert int8["quantization"]["encoding"] == "openvino" and int8["quantization"]["calib_images"] == 256
    assert int8["size_bytes"] < 0.5 * fp32["size_bytes"] and fp16["size_bytes"] < 0.7 * fp32["size_bytes"]
    md = (out / "report.md").read_text()
    assert "inference precision **f32**" in md and "| openvino | int8 | ok |" in md
    assert "openvino encoding): calibrated with nncf on 256 images" in md
    assert "`EXECUTION_MODE_HINT=ACCURACY` (stored in the artifact" in md


def test_the_device_default_is_measured_where_it_differs(demo):
    """On CPUs with AVX512-BF16 or AMX, OpenVINO's default computes float layers in bf16: the report
    holds the parity at that default beside the verified one (and says so in report.md)."""
    report, out = demo
    default = ov_target.device_default_precision("CPU")
    for entry in report["artifacts"]:
        other = entry.get("at_runtime_default")
        if default == "f32":
            assert other is None  # nothing differs: nothing measured twice
            continue
        assert other["runtime"] == "openvino CPU (device default)" and other["inference_precision"] == default
        parity = other["parity"]
        assert parity["cosine"] < entry["parity"]["cosine"]  # the lower precision shows in the numbers
        floor = parity["max_abs"] <= 1e-4 if entry["precision"] == "fp32" else \
            parity["cosine"] >= MIN_COSINE[entry["precision"]]
        assert other["meets_threshold"] == floor
    if default == "f32":
        pytest.skip("this CPU's OpenVINO default is f32 (no AVX512-BF16/AMX): the device default equals the verified run")
    assert f"at the runtime's defaults (openvino CPU (device default), inference precision {default})" in \
        (out / "report.md").read_text()


def test_loaded_ir_meets_its_threshold_on_every_cpu(demo):
    """rd.load compiles an IR as verified: on a bf16 CPU, where OpenVINO's default gave the demo INT8 a
    worst cosine of 0.986 (rmt-deploy 0.3, AMD Zen 4), the verified run keeps >= 0.99 and >= 99% agreement."""
    import rmt_deploy as rd
    from rmt_deploy.bench.parity import compare_logits
    from rmt_deploy.bundled import bundled_images

    _, out = demo
    images = sorted(bundled_images("val").rglob("*.png"))[::12]
    with rd.load(out / "model.xml", threads=THREADS) as fp32:
        x = np.stack([fp32.tensor(p) for p in images])
        reference = np.concatenate([fp32.runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
        assert fp32.runner.execution()["inference_precision"] == "f32"
    for name, floor in (("model_int8.xml", 0.99), ("model_fp16.xml", 0.999)):
        with rd.load(out / name, threads=THREADS) as model:
            got = np.concatenate([model.runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
            assert model.runner.execution()["execution_mode"] == "ACCURACY"
        scores = compare_logits(reference, got)
        assert scores["cosine"] >= floor and scores["top1_agreement"] >= 0.99, (name, scores)
    if ov_target.device_default_precision("CPU") == "f32":
        pytest.skip("no AVX512-BF16/AMX here: OpenVINO's default is f32 too, the bf16 case cannot be shown")
    with rd.load(out / "model_fp16.xml", threads=THREADS, execution="default") as model:
        assert model.runner.execution()["inference_precision"] == "bf16"  # what a user's default compile gets
        assert model.runner.name == "openvino CPU (device default)"


def test_ir_carries_metadata_and_int8_structure(demo):
    _, out = demo
    info = ov_target.describe(out / "model_int8.xml")
    meta = info["metadata"]
    assert meta["precision"] == "int8" and meta["arch"] == "rmt-demo" and meta["input_size"] == "64x64"
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406] and "256 calibration images" in meta["quantization"]
    assert info["input_shape"] == [1, 3, 64, 64] and not info["dynamic_batch"]
    model = ov_target.read_model(out / "model_int8.xml")
    summary = int8_summary(model)
    assert summary["levels"] == [256] and summary["quantized_layers"] == summary["int8_weight_constants"] > 0
    # The policy: activation FakeQuantize only in front of Convolution / GroupConvolution / MatMul;
    # LayerNorm (MVN), softmax, GELU and the decay add stay in float.
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        users = {t.get_node().get_type_name() for t in op.output(0).get_target_inputs()}
        assert users <= set(OPENVINO_QUANTIZED_OPS), (op.get_friendly_name(), users)
    fp16 = ov_target.inspect_graph(out / "model_fp16.xml")
    assert set(fp16["constant_dtypes"]) == {"f16"} and fp16["int8"]["quantized_layers"] == 0


def test_revert_restores_the_float_model_exactly(tmp_path):
    """Reverting every layer (activations, int8 weights and bias-corrected biases) gives back
    the calibrated FP32 model; reverting one removes exactly that layer's quantization."""
    import openvino as ov

    model = random_model("rmt-demo")
    x = real_images(SIZE, 8)
    path = onnx_export.export(to_deploy(model, SIZE), tmp_path / "deploy.onnx", SIZE, dynamic_batch=False,
                              metadata={})
    float_model = ov_target.convert(path)
    quantized = quantize_openvino(ov_target.convert(path), x, QuantPolicy(calib_size=8))
    layers = quantized_layers(quantized)
    core = ov.Core()

    def logits(m):
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate([compiled(x[i:i + 1])[0] for i in range(len(x))])

    reference = logits(float_model)
    assert np.abs(logits(quantized) - reference).max() > 1e-3  # int8 really differs
    one = quantized.clone()
    assert revert(one, layers[:1], float_model) == layers[:1]
    assert quantized_layers(one) == layers[1:]
    everything = quantized.clone()
    assert sorted(revert(everything, layers, float_model)) == sorted(layers)
    assert int8_summary(everything)["fake_quantize"] == 0
    np.testing.assert_allclose(logits(everything), reference, atol=1e-5)


def test_accuracy_aware_is_shared_with_onnx(tmp_path):
    """The ONNX path's accuracy-aware search, on OpenVINO's graph: dark calibration frames cost
    top-1, a tight budget reverts layers until it fits. (Not a zero budget: the float layers
    run in bf16 here, which alone may flip one image of 360.)"""
    from PIL import Image

    calib = tmp_path / "dark"
    calib.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 64), (4 * i,) * 3).save(calib / f"{i}.png")
    report = run_export(ExportOptions(targets=("openvino",), out=tmp_path / "out", int8=True, calib=calib,
                                      max_drop=0.3, bench_iters=0, parity_samples=8, threads=THREADS))
    (int8,) = report["artifacts"]
    aware = int8["accuracy_aware"]
    assert aware["initial_drop"] > 0.3 and aware["ranking"], aware
    assert aware["fits"] and int8["status"] == "ok" and aware["final_drop"] == int8["accuracy"]["drop"] <= 0.3
    assert len(aware["reverted_layers"]) >= 1 and [s["reverted"] for s in aware["steps"]][0] == 1
    kept = ov_target.read_model(tmp_path / "out" / "model_int8.xml")
    assert quantized_layers(kept) and set(aware["reverted_layers"]).isdisjoint(quantized_layers(kept))
    # No scratch candidates or partial files left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model_int8.bin", "model_int8.xml", "plot.png",
                                                                     "report.json", "report.md"]


def test_bench_device_hint_and_dynamic_batch(tmp_path):
    out = tmp_path / "out"
    result = run("export", "--target", "ov", "--dynamic-batch", "--out", str(out), "--bench-iters", "0")
    assert result.returncode == 0, result.stderr
    default = ov_target.device_default_precision("CPU")
    said = f"openvino/fp16: OpenVINO's default on this CPU is {default}: worst cosine"
    assert (said in result.stderr) == (default != "f32"), result.stderr  # one line, only where it differs
    assert ov_target.describe(out / "model_fp16.xml")["dynamic_batch"]
    result = run("bench", str(out / "model_fp16.xml"), "--device", "CPU", "--hint", "throughput", "--batch", "1,2",
                 "--iters", "3", "--min-time", "0", "--no-reference", "--out", str(tmp_path / "b"), "--json")
    assert result.returncode == 0, result.stderr
    (art,) = json.loads(result.stdout)["artifacts"]
    assert [c["status"] for c in art["benchmarks"]] == ["ok", "ok"], art["benchmarks"]
    cell = art["benchmarks"][1]
    assert cell["runtime"] == "openvino CPU throughput" and cell["async"]["images_per_s"] > 0
    assert cell["throughput"] == cell["async"]["images_per_s"] and art["precision"] == "fp16"
    assert art["execution_by_runtime"]["CPU"]["hint"] == "throughput"


@pytest.mark.parametrize("args, message", [
    (["--device", "NPU7"], "--device NPU7: OpenVINO sees CPU"),
    (["--hint", "fastest"], "--hint 'fastest' is unknown"),
    (["--execution", "fast"], "--execution 'fast' is unknown; choose verified or default"),
])
def test_bench_bad_openvino_options(demo, args, message):
    _, out = demo
    result = run("bench", str(out / "model.xml"), *args, "--out", str(out.parent / "bad"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (out.parent / "bad").exists()


def test_ir_without_its_weights_is_a_clear_failure(demo, tmp_path):
    _, out = demo
    lonely = tmp_path / "lonely.xml"
    lonely.write_bytes((out / "model.xml").read_bytes())
    result = run("bench", str(lonely), "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "its weights file lonely.bin is missing" in result.stderr


@pytest.mark.slow
def test_rmt_t_fp32_ir_matches_pytorch_at_224(tmp_path):
    """Full-size RMT-T: the FP32 IR, run in f32, agrees with PyTorch like the ONNX export."""
    import torch

    size = (224, 224)
    model = random_model("rmt-t")
    x = real_images(size, 2)
    folder = tmp_path
    onnx_path = onnx_export.export(to_deploy(model, size), folder / "deploy.onnx", size, dynamic_batch=False,
                                   metadata={})
    xml = ov_target.save(ov_target.convert(onnx_path), folder / "model.xml", {"precision": "fp32"})
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    with ov_target.TARGET.load(xml, 2) as runner:
        got = np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
        assert runner.execution()["inference_precision"] == "f32"
    assert np.abs(got - ref).max() <= 1e-4


def test_missing_openvino_names_the_extra(tmp_path):
    """Without OpenVINO the export stops before any work, with the install command intact (the
    '[openvino]' extra must survive the terminal's markup)."""
    import os
    import subprocess

    from .conftest import EXE

    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "openvino.py").write_text("raise ImportError('blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker), "COLUMNS": "200"}
    env.pop("RMT_DEPLOY_DEBUG", None)
    result = subprocess.run([EXE, "export", "--target", "openvino", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert '-e ".[openvino]"' in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
