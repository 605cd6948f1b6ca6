"""LiteRT target: FP32, FP16 and INT8 .tflite files of the demo, verified by LiteRT's interpreter, with
XNNPACK's share recorded and no network call while exporting; backbone maps; metadata round trip;
the accuracy-aware search's float layers in a converted file; bad inputs in one line.

Cost: one export of three precisions (about 40 s: two conversions, 256-image calibration), one
backbone conversion and two INT8 conversions of reverted graphs (about 10 s each)."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

import rmt_deploy as rd
from rmt_deploy.bundled import bundled_images
from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import ExportOptions, run_export
from rmt_deploy.model.checkpoint import load_model
from rmt_deploy.quant import pt2e
from rmt_deploy.rewrite import to_deploy

from .conftest import real_images, run

pytest.importorskip("litert_torch", reason='litert-torch not installed (pip install -c constraints.txt -e ".[litert]")')
litert = pytest.importorskip("rmt_deploy.targets.litert")

VAL = sorted(bundled_images("val").rglob("*.png"))
ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of all three precisions, run with sockets refused."""
    out = tmp_path_factory.mktemp("litert") / "out"
    connects = []

    def connect(self, address):
        connects.append(address)
        raise OSError("rmt-deploy's LiteRT export must make no network call")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        report = run_export(ExportOptions(targets=("litert",), fp32=True, fp16=True, int8=True, out=out, bench_iters=3,
                                          parity_samples=8))
    return report, out, connects


def test_every_precision_is_verified_by_litert(exported):
    report, out, connects = exported
    assert connects == []
    entries = {a["precision"]: a for a in report["artifacts"]}
    assert set(entries) == {"fp32", "fp16", "int8"} and all(a["status"] == "ok" for a in entries.values()), entries
    assert entries["fp32"]["parity"]["max_abs"] <= ATOL
    assert entries["fp16"]["parity"]["cosine"] >= 0.9999
    assert entries["int8"]["parity"]["cosine"] >= 0.99 and entries["int8"]["accuracy"]["agreement"] >= 0.97
    quantization = entries["int8"]["quantization"]
    assert quantization["calibrator"].startswith("pt2e") and quantization["max_abs_weight"] <= 127
    assert entries["int8"]["size_bytes"] < entries["fp16"]["size_bytes"] < entries["fp32"]["size_bytes"]
    assert entries["fp32"]["latency_ms"]["runtime"] == "litert xnnpack"
    assert entries["fp32"]["memory"]["peak_mb"] < 300  # the interpreter alone: no torch, no converter
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite", "model_fp16.tflite", "model_int8.tflite",
                                                     "plot.png", "report.json", "report.md"]


def test_xnnpack_takes_every_float_op(exported):
    report, out, _ = exported
    graphs = {a["precision"]: a["graph"]["delegation"] for a in report["artifacts"]}
    for precision in ("fp32", "fp16"):
        assert graphs[precision]["litert_kernels"] == {} and graphs[precision]["delegate_calls"] == 1, graphs
    assert graphs["int8"]["delegated_share"] >= 0.95, graphs["int8"]
    assert "XNNPACK took" in (out / "report.md").read_text()


def test_metadata_travels_in_the_file_and_predict_uses_it(exported):
    _, out, _ = exported
    for name, precision in (("model.tflite", "fp32"), ("model_fp16.tflite", "fp16"), ("model_int8.tflite", "int8")):
        meta = litert.describe(out / name)["metadata"]
        assert meta["precision"] == precision and meta["arch"] == "rmt-demo" and meta["input_size"] == "64x64"
        assert json.loads(meta["class_names"]) == [str(i) for i in range(10)] and meta["runtime"] == "litert"
    with rd.load(out / "model_int8.tflite") as model:
        predictions = model.predict(VAL[::36], topk=1)
    assert sum(p.names[0] == p.source.split("/")[-2] for p in predictions) >= len(predictions) - 1


def test_bench_and_compare(exported, tmp_path):
    _, out, _ = exported
    done = run("bench", str(out / "model_int8.tflite"), "--iters", "5", "--no-reference", "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    cell = json.loads((tmp_path / "b" / "report.json").read_text())["artifacts"][0]
    assert cell["status"] == "ok" and cell["latency_ms"]["p50"] > 0
    refused = run("compare", str(out / "model.tflite"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len([ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_a_file_without_our_metadata_needs_preprocess(exported, tmp_path):
    from ai_edge_litert.tools import flatbuffer_utils

    from rmt_deploy.data.images import Preprocess

    _, out, _ = exported
    model = flatbuffer_utils.read_model_from_bytearray(bytearray((out / "model.tflite").read_bytes()))
    model.metadata = [m for m in model.metadata if m.name not in (b"rmt_deploy", "rmt_deploy")]
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    assert litert.read_metadata(foreign) == {}
    with pytest.raises(UserInputError, match="no rmt-deploy metadata"):
        rd.load(foreign)
    with rd.load(foreign, preprocess=Preprocess((64, 64), crop_pct=1.0)) as loaded:
        assert loaded.predict(VAL[0], topk=1)[0].ok


def test_damaged_files_are_one_line(exported, tmp_path):
    _, out, _ = exported
    data = (out / "model.tflite").read_bytes()
    cut, other = tmp_path / "cut.tflite", tmp_path / "other.tflite"
    cut.write_bytes(data[:100_000])
    other.write_bytes(b"\0" * 4 + b"ET12" + data[8:4096])
    for path in (cut, other):
        done = run("predict", str(path))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")][0].startswith(f"error: {path.name}")


@pytest.mark.parametrize("flags, message", [
    (["--dynamic"], "--dynamic"),
    (["--delegate", "vulkan"], "--delegate"),
])
def test_unsupported_flags_fail_before_any_work(flags, message, tmp_path):
    done = run("export", "--target", "tflite", "--out", str(tmp_path / "o"), *flags)
    assert done.returncode == 2 and message in done.stderr and not (tmp_path / "o").exists(), done.stderr
    assert "Traceback" not in done.stderr


def test_backbone_file_matches_pytorch_per_map(tmp_path):
    report = run_export(ExportOptions(targets=("litert",), task="backbone", img_size=(64, 96), out_indices=(1, 2, 3),
                                      out=tmp_path / "out", bench_iters=0, parity_samples=4))
    (entry,) = report["artifacts"]
    assert entry["status"] == "ok" and entry["parity"]["max_abs"] <= ATOL
    assert set(entry["parity"]["outputs"]) == {"feat1", "feat2", "feat3"}
    assert litert.describe(tmp_path / "out" / "model.tflite")["output_names"] == ["feat1", "feat2", "feat3"]


def test_reverted_layers_run_in_float_in_the_file(demo_weights, tmp_path):
    """The accuracy-aware search writes candidates with some layers reverted: every layer reverted gives
    FP32 back (and float input and output); a few reverted still leave the other layers int8."""
    model = to_deploy(load_model(demo_weights).model, (64, 64), encoding="xnnpack")
    x = real_images((64, 64), 3)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    calibrated = pt2e.calibrate(model, (1, 3, 64, 64), real_images((64, 64), 8), quantizer="litert")
    layers = pt2e.quantized_layers(calibrated)
    assert len(layers) == 54

    def run_file(graph) -> tuple[np.ndarray, str]:
        path = tmp_path / "c.tflite"
        litert.TARGET.write_int8(litert.Int8Candidate(graph, (64, 64), ("logits",)), path, {})
        with litert.LiteRTRunner(path, 1) as runner:
            out = np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
            return out, runner.signature.inputs["input"]["dtype"].__name__

    partial = pt2e.copy_graph(calibrated)
    assert pt2e.revert_layers(partial, ["stages.0.blocks.0.fc2", "stages.1.blocks.0.pos.conv"])
    out, dtype = run_file(partial)
    assert np.abs(out - ref).max() > 1e-3 and dtype == "int8"  # the stem's first conv is int8: so is the input
    assert np.abs(out - ref).max() < 0.25  # int8 logits dequantized with the output tensor's own scale
    everything = pt2e.copy_graph(calibrated)
    pt2e.revert_layers(everything, layers)
    out, dtype = run_file(everything)
    assert np.abs(out - ref).max() <= 1e-5 and dtype == "float32"


def test_a_missing_extra_is_one_line(tmp_path):
    """As on a machine without the litert extra: the converter cannot be found (find_spec says None)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['litert_torch'] = None; from rmt_deploy.cli import main; "
            f"sys.argv = ['rmt-deploy', 'export', '--target', 'litert', '--out', {str(tmp_path / 'o')!r}]; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and not (tmp_path / "o").exists()
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert "litert_torch not installed" in line and '".[litert]"' in line
