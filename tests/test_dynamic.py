"""--dynamic: one artifact for many input sizes, its tables built in the graph from the input's size."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import run_export
from rmt_deploy.jobs.plan import ExportOptions, plan
from rmt_deploy.progress import NullProgress
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.sizes import InputSizes, SizeRange, parse_sizes

from .conftest import random_model, real_images, run

SIZES = [(64, 64), (64, 128), (96, 64)]  # the verified size, then two non-square ones


@pytest.mark.parametrize("name", ["rmt-t", "rmt-s", "rmt-b", "rmt-l"])
def test_dynamic_deploy_form_matches_the_reference_at_every_size(name):
    ref = random_model(name)
    x = {size: torch.from_numpy(real_images(size, n=1)) for size in SIZES}
    with torch.no_grad():
        expected = {size: ref(x[size]) for size in SIZES}
        for encoding in ("generic", "onnxruntime"):
            dynamic = to_deploy(ref, SIZES[0], encoding=encoding, dynamic=True)
            for size in SIZES:
                assert (dynamic(x[size]) - expected[size]).abs().max() < 1e-4, (encoding, size)
        # At the fixed form's own size the two compute the same floats.
        assert torch.equal(dynamic(x[SIZES[1]]), to_deploy(ref, SIZES[1], encoding="onnxruntime")(x[SIZES[1]]))


def test_built_tables_equal_the_stored_ones():
    ref = random_model("rmt-t")
    fixed, dynamic = to_deploy(ref, (96, 160)), to_deploy(ref, (32, 32), dynamic=True)
    h, w = 24, 40
    for stored, built in zip(fixed.stages, dynamic.stages):
        (s_sin, s_cos, s_masks), (b_sin, b_cos, b_masks) = stored.tables(h, w), built.tables(h, w)
        for a, b in zip((s_sin, s_cos, *s_masks), (b_sin, b_cos, *b_masks)):
            assert torch.equal(a, b)
        h, w = (h + 1) // 2, (w + 1) // 2


def test_size_range_defaults_and_verified_sizes():
    assert SizeRange.around((224, 224)) == SizeRange(96, 448)
    assert SizeRange.around((64, 64)) == SizeRange(32, 128)
    assert SizeRange(32, 128).verified_sizes((64, 96)) == [(32, 32), (32, 128), (64, 96), (128, 128)]  # by area
    assert SizeRange(64, 128).holds((64, 96)) and not SizeRange(64, 128).holds((32, 96))


def test_sizes_an_artifact_takes():
    assert parse_sizes("224, 288x384,224") == ((224, 224), (288, 384))
    with pytest.raises(UserInputError, match="--size 100: 100 is not a multiple of 32"):
        parse_sizes("224,100")
    ranged = InputSizes.of({"dynamic_size": "96-448"}, (224, 224))
    assert ranged.holds((96, 448)) and not ranged.holds((64, 224)) and not ranged.holds((100, 224))
    listed = InputSizes.of({"dynamic_size": "32-128", "input_sizes": "32x32,64x64"}, (64, 64))
    assert listed.holds((32, 32)) and not listed.holds((96, 96))  # Core ML: only the enumerated ones
    with pytest.raises(UserInputError, match=r"--size: 96x96 is outside the sizes this artifact takes "
                                             r"\(one of 32x32, 64x64\); re-export"):
        listed.check((96, 96), "--size", "re-export")
    assert str(InputSizes.of({}, (64, 96))) == "only 64x96" and not InputSizes.of({}, (64, 96)).holds((96, 64))


@pytest.mark.parametrize("flags, message", [
    (dict(min_size=64), "--min-size sets the range of a dynamic artifact; add --dynamic"),
    (dict(dynamic=True, min_size=48), "--min-size 48 must be a multiple of 32"),
    (dict(dynamic=True, min_size=256, max_size=128), "--min-size 256 is above --max-size 128"),
    (dict(dynamic=True, targets=("executorch",)), "drop --dynamic or --target executorch"),
])
def test_bad_ranges_stop_before_any_work(flags, message, tmp_path):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(")):
        plan(ExportOptions(out=tmp_path / "out", **flags))
    assert not (tmp_path / "out").exists()


def test_range_that_misses_the_verified_size_or_memory_is_refused(tmp_path):
    from rmt_deploy.bundled import bundled_weights
    from rmt_deploy.jobs.prepare import _check_size
    from rmt_deploy.model.checkpoint import load_model

    with pytest.raises(UserInputError, match="--img-size 64x64 .* is outside --min-size 96 .. --max-size 128"):
        run_export(ExportOptions(dynamic=True, min_size=96, max_size=128, out=tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    # Every allowed size fits the 16 GiB limit now that the reference runs in chunks; under a smaller one
    # the error names the memory needed and the largest size that fits.
    loaded = load_model(bundled_weights(), None)
    _check_size(loaded, (2048, 2048), "--max-size")
    with pytest.raises(UserInputError, match=r"--max-size 2048 needs about 0\.5 GiB .*limit 0\.25 GiB\); use at "
                                             r"most about [0-9]{3,4}x[0-9]{3,4}$"):
        _check_size(loaded, (2048, 2048), "--max-size", limit=1 << 28)


def test_coreml_enumerated_sizes_that_need_chunks_are_refused(tmp_path):
    pytest.importorskip("coremltools", reason="coremltools not installed (pip install -e '.[coreml]')")
    with pytest.raises(UserInputError, match=r"--target coreml with --dynamic takes no attention in chunks, and "
                                             r"--max-size 1024 needs them for rmt-demo \(2/2,1/1,4,1\)"):
        run_export(ExportOptions(targets=("coreml",), dynamic=True, img_size=(512, 512), out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


class StepLog(NullProgress):
    """The progress interface, recording each step's description."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def step(self, description: str):
        self.steps.append(description)
        return super().step(description)


@pytest.mark.slow
def test_demo_exports_one_artifact_for_many_sizes(tmp_path):
    """FP32 and INT8 for ONNX, ONNX Runtime and OpenVINO: verified at four sizes, runnable at others.
    ``--min-cosine 0.99`` holds INT8 at every verified size: the search ranks and judges layers there."""
    import onnxruntime as ort

    from rmt_deploy.bundled import bundled_weights
    from rmt_deploy.model.checkpoint import load_model

    out = tmp_path / "out"
    steps = StepLog()
    report = run_export(ExportOptions(targets=("onnx", "onnxruntime", "openvino"), dynamic=True, int8=True, fp32=True,
                                      min_size=32, max_size=128, bench_iters=0, calib_size=32, parity_samples=4,
                                      min_cosine=0.99, out=out), steps)
    # One graph per encoding: ONNX's files and OpenVINO's calibration read the same generic export.
    assert sorted(s for s in steps.steps if s.startswith("Exporting the deploy form")) == [
        "Exporting the deploy form to ONNX (generic encoding, dynamic size)",
        "Exporting the deploy form to ONNX (onnxruntime encoding, dynamic size)"]
    dyn = report["model"]["dynamic_size"]
    assert dyn == {"min": 32, "max": 128, "verified_sizes": [[32, 32], [32, 128], [64, 64], [128, 128]]}
    assert len(report["artifacts"]) == 6
    for a in report["artifacts"]:
        assert a["status"] == "ok", a
        assert [p["size"] for p in a["parity_at_sizes"]] == [[32, 32], [32, 128], [128, 128]]
        floor = {"fp32": 1.0 - 1e-6, "int8": 0.99}[a["precision"]]
        cosines = [a["parity"]["cosine"]] + [p["cosine"] for p in a["parity_at_sizes"]]
        assert min(cosines) >= floor, a["parity_at_sizes"]
        if a["precision"] == "int8":  # the budget was judged on the worst size, not the calibration size
            searched = a["accuracy_aware"]
            assert searched["initial_cosine"] <= min(cosines) + 1e-9 and "int8_target" not in a
            if searched["reverted_layers"]:
                assert abs(searched["final_cosine"] - min(cosines)) < 1e-6, searched
    assert "dynamic size: height and width 32–128" in (out / "report.md").read_text()

    # bench --size: any size in the range, one cell per size and batch; outside it, one line and exit 2.
    done = run("bench", str(out / "model.onnx"), "--size", "64,32x96", "--batch", "1,2", "--iters", "2",
               "--min-time", "0", "--no-reference", "--out", str(tmp_path / "bench"), "--json")
    assert done.returncode == 0, done.stderr
    cells = json.loads(done.stdout)["artifacts"][0]["benchmarks"]
    assert [(c["size"], c["batch"], c["status"]) for c in cells] == [
        ([64, 64], 1, "ok"), ([64, 64], 2, "ok"), ([32, 96], 1, "ok"), ([32, 96], 2, "ok")]
    assert "| 32x96 | 2 | ok" in (tmp_path / "bench" / "report.md").read_text()  # "ok ⚠ noisy" on a busy machine
    done = run("bench", str(out / "model.onnx"), "--size", "32x96", "--iters", "2", "--min-time", "0",
               "--no-reference", "--out", str(tmp_path / "bench2"), "--json")
    report2 = json.loads(done.stdout)
    assert [c["size"] for c in report2["artifacts"][0]["benchmarks"]] == [[64, 64], [32, 96]]  # verified size too
    assert report2["artifacts"][0]["latency_ms"] == report2["artifacts"][0]["benchmarks"][0]["latency_ms"]
    from rmt_deploy.bench.plot import _by_batch_runs

    assert _by_batch_runs(report2["artifacts"][0], report2) == report2["artifacts"][0]["benchmarks"][:1]
    for args in (["--size", "256"], ["--from", str(out), "--size", "32x160"]):
        files = [] if "--from" in args else [str(out / "model_int8.onnx")]
        before = (out / "report.json").read_text()
        done = run("bench", *files, *args, "--out", str(tmp_path / "never"))
        assert done.returncode == 2 and "each side 32–128, a multiple of 32" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "never").exists()
        assert (out / "report.json").read_text() == before

    # At a size nobody verified, in a batch of two: the standard file still computes PyTorch's logits.
    model = load_model(bundled_weights(), None).model
    x = real_images((96, 64), n=2)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"))
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["dynamic_size"] == "32-128" and meta["input_size"] == "64x64"
    assert np.abs(session.run(None, {"input": x})[0] - expected).max() < 1e-4
    assert json.loads(meta["mean"])  # predict's preprocessing is still recorded

    # OpenVINO: our runner runs the verified size on a static copy (the CPU plugin's dynamic shapes
    # cost ~1.2x), other sizes on the dynamic model; both compute PyTorch's logits.
    from rmt_deploy.targets import openvino

    ov_entry = next(a for a in report["artifacts"] if a["target"] == "openvino" and a["precision"] == "fp32")
    assert ov_entry["execution"]["static_at"] == [64, 64]
    with openvino.TARGET.load(out / "model.xml") as runner:
        for size in [(64, 64), (96, 64)]:
            x = real_images(size, n=2)
            with torch.no_grad():
                expected = model(torch.from_numpy(x)).numpy()
            assert np.abs(runner.infer({"input": x})["logits"] - expected).max() < 1e-4, size
        assert list(runner._static) == [(2, 3, 64, 64)] and runner.last_model == "dynamic"

    # compare's taps are activations, not the size integers a dynamic graph reads inside each scope.
    import rmt_deploy as rd

    result = rd.compare(out / "model_int8.onnx", out=tmp_path / "compare")
    assert 0 < result.tap("stages.2.blocks.1").rel_l2 < 0.1


@pytest.mark.slow
def test_demo_backbone_is_verified_per_map_at_detection_like_aspect_ratios(tmp_path):
    report = run_export(ExportOptions(task="backbone", targets=("onnx", "openvino"), fp32=True, dynamic=True,
                                      img_size=(64, 96), min_size=32, max_size=128, bench_iters=3, bench_warmup=1,
                                      parity_samples=4, out=tmp_path / "out"))
    assert report["model"]["dynamic_size"]["verified_sizes"] == [[32, 32], [32, 128], [64, 96], [128, 128]]
    assert report["model"]["attention_chunks"] == "1/1,1/1,1,1" and report["model"]["attention_chunk_mb"] == 64
    for a in report["artifacts"]:
        assert a["status"] == "ok", a
        # Peak memory of one image run twice in a fresh process, at the largest verified size.
        memory = a["memory"]
        assert memory["size"] == [128, 128] and 0 < memory["imports_mb"] < memory["load_mb"]
        assert memory["load_mb"] <= memory["first_run_mb"] <= memory["peak_mb"]
        assert [t["size"] for t in a["latency_at_sizes"]] == [[32, 32], [32, 128], [128, 128]]
        assert all(t["p50"] > 0 and t["iterations"] == 3 for t in a["latency_at_sizes"])
        if a["target"] == "openvino":  # the verified size on a static copy, the others on the dynamic IR
            assert a["latency_ms"]["model"] == "static copy"
            assert {t["model"] for t in a["latency_at_sizes"]} == {"dynamic"}
        for parity in a["parity_at_sizes"]:
            assert set(parity["outputs"]) == {"feat0", "feat1", "feat2", "feat3"} and parity["max_abs"] <= 1e-4, parity
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## At every verified size" in text and "| openvino | fp32 | 128x128 |" in text
    assert "inference at 128x128 in a fresh process: peak" in text and "after the first run" in text


@pytest.mark.slow
def test_rmt_t_dynamic_onnx_matches_pytorch_from_96_to_448(tmp_path):
    import onnxruntime as ort

    from rmt_deploy.targets.onnx_export import export

    ref = random_model("rmt-t")
    path = export(to_deploy(ref, (224, 224), dynamic=True), tmp_path / "model.onnx", (224, 224), dynamic_batch=True,
                  metadata={}, size_range=SizeRange(96, 448))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(224, 224), (96, 448), (448, 448)]:
        x = real_images(size, n=1)
        with torch.no_grad():
            expected = ref(torch.from_numpy(x)).numpy()
        assert np.abs(session.run(None, {"input": x})[0] - expected).max() < 1e-4, size


def test_tensorrt_profile_spans_the_batch_and_the_size_range():
    from rmt_deploy.targets.trt_readiness import profile_shapes

    assert profile_shapes([1, 3, 224, 224], {}) is None
    assert profile_shapes([None, 3, 224, 224], {}) == ((1, 3, 224, 224), (1, 3, 224, 224), (32, 3, 224, 224))
    meta = {"dynamic_size": "96-448", "input_size": "224x320"}
    assert profile_shapes([None, 3, None, None], meta, (1, 2, 8)) == (
        (1, 3, 96, 96), (2, 3, 224, 320), (8, 3, 448, 448))
    assert profile_shapes([None, 3, None, None], {}) is None  # no recorded range: readiness reports the axes


@pytest.mark.slow
def test_tensorrt_and_fp16_onnx_take_the_range(tmp_path):
    """TensorRT-ready FP16 and INT8 ONNX with the size range as their profile, parsed and built by
    TensorRT-RTX here; the standard FP16 ONNX keeps its tables in FP32 and matches at every size."""
    out = tmp_path / "out"
    report = run_export(ExportOptions(targets=("onnx", "trt"), dynamic=True, fp16=True, int8=True, min_size=32,
                                      max_size=128, bench_iters=0, calib_size=32, parity_samples=4, out=out))
    by = {(a["target"], a["precision"]): a for a in report["artifacts"]}
    fp16 = by["onnx", "fp16"]
    assert fp16["status"] == "ok" and all(p["cosine"] > 0.9999 for p in fp16["parity_at_sizes"])
    # The rotary phase reaches Sin and Cos in FP32, with no FP16 round trip a runtime would honour.
    import onnx

    graph = onnx.load(str(out / "model_fp16.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    assert {producer[n.input[0]].op_type for n in graph.node if n.op_type in ("Sin", "Cos")} == {"Mul"}
    for precision in ("fp16", "int8"):
        trt = by["trt", precision]
        assert trt["readiness"]["status"] == "ready", trt["readiness"]
        assert trt["readiness"]["profile"] == {"input": "input", "min": [1, 3, 32, 32], "opt": [1, 3, 64, 64],
                                               "max": [32, 3, 128, 128]}
        if trt["readiness"]["rtx_build"] is not None:  # TensorRT-RTX installed (the dev extra)
            assert trt["readiness"]["rtx_build"]["status"] == "ok", trt["readiness"]["rtx_build"]
        assert len(trt["onnx_parity_at_sizes"]) == 3
        floor = 0.9999 if precision == "fp16" else 0.95  # INT8: calibrated at 64², the export's guard
        assert all(p["cosine"] > floor for p in trt["onnx_parity_at_sizes"]), trt["onnx_parity_at_sizes"]
    script = (out / "build_engine.sh").read_text()
    assert script.count("--minShapes=input:1x3x32x32 --optShapes=input:1x3x64x64 --maxShapes=input:32x3x128x128") == 2


def test_int8_under_its_target_at_a_size_is_said_and_recorded():
    """Between the 0.95 guard and INT8's 0.99, an artifact is kept, and the report and the log name each
    size under 0.99 (the OpenVINO demo above, without --min-cosine: 0.97 at 32x128)."""
    from types import SimpleNamespace

    from rmt_deploy.bench.report import _graph_lines
    from rmt_deploy.bench.schema import Artifact, Parity
    from rmt_deploy.jobs.verify import INT8_TARGET_COSINE, _int8_target

    logged: list[str] = []
    sources = SimpleNamespace(size=(64, 64), progress=SimpleNamespace(log=logged.append))
    entry = Artifact("openvino", "int8", parity=Parity(max_abs=0.1, mean_abs=0.01, cosine=0.999),
                     details={"parity_at_sizes": [{"size": [32, 32], "cosine": 0.995},
                                                  {"size": [32, 128], "cosine": 0.9735}]})
    _int8_target(entry, sources, "openvino/int8")
    assert entry.details["int8_target"] == {"min_cosine": INT8_TARGET_COSINE,
                                            "missed": [{"size": [32, 128], "cosine": 0.9735}]}
    assert len(logged) == 1 and "0.9735 at 32x128" in logged[0] and "--min-cosine 0.99" in logged[0]
    shown = _graph_lines({"target": "any", "precision": "int8", "graph": {"ops": {}}, **entry.details})
    assert any("under INT8's 0.99 worst cosine**: 0.9735 at 32x128" in line for line in shown), shown
    entry.details["parity_at_sizes"][1]["cosine"] = 0.995  # a re-verification after the search clears it
    _int8_target(entry, sources, "openvino/int8")
    assert "int8_target" not in entry.details and len(logged) == 1
