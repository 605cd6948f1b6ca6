"""`export --int8 --fp16` end to end: accuracy targets on the demo, accuracy-aware mode, bad input."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from rmt_deploy.bundled import bundled_images
from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import ExportOptions, run_export
from rmt_deploy.quant import checks
from rmt_deploy.quant.encode import quantized_layers

from .conftest import run


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "out"
    return run_export(ExportOptions(out=out, int8=True, fp16=True, bench_iters=3)), out


def test_demo_int8_and_fp16_meet_accuracy_targets(demo_report):
    report, out = demo_report
    arts = {a["precision"]: a for a in report["artifacts"]}
    assert set(arts) == {"fp32", "int8", "fp16"} and all(a["status"] == "ok" for a in arts.values())
    int8, fp16 = arts["int8"], arts["fp16"]
    assert int8["accuracy"]["samples"] == 360
    assert int8["accuracy"]["drop"] <= 0.3 and int8["accuracy"]["agreement"] >= 0.99
    assert fp16["accuracy"]["drop"] <= 0.05 and fp16["parity"]["cosine"] >= 0.999
    assert int8["quantization"]["calib_images"] == 256 and int8["quantization"]["statistic"] == "minmax"
    model = onnx.load(str(out / int8["path"]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8" and "256 calibration images" in meta["quantization"]
    assert checks.onnxruntime_problems(model) == [] and quantized_layers(model)
    assert int8["size_bytes"] < 0.7 * arts["fp32"]["size_bytes"]
    md = (out / "report.md").read_text()
    assert "| onnx | int8 |" in md and "| onnx | fp16 |" in md


def test_accuracy_aware_reverts_layers(tmp_path):
    """A poor calibration set (8 near-black frames, a real mistake) costs the demo model top-1;
    a zero budget then forces layers back to float, most sensitive first, until it fits."""
    from PIL import Image

    calib = tmp_path / "dark"
    calib.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 64), (4 * i,) * 3).save(calib / f"{i}.png")
    report = run_export(ExportOptions(out=tmp_path / "out", int8=True, calib=calib, max_drop=0.0,
                                      bench_iters=0, parity_samples=8))
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    aware = int8["accuracy_aware"]
    assert aware["initial_drop"] > 0, "dark calibration frames should cost some top-1"
    assert aware["fits"] and int8["status"] == "ok"
    assert len(aware["reverted_layers"]) >= 1 and aware["final_drop"] == int8["accuracy"]["drop"] == 0
    assert [s["reverted"] for s in aware["steps"]][0] == 1 and aware["ranking"]
    kept = onnx.load(str(tmp_path / "out" / "model_int8.onnx"))
    assert quantized_layers(kept) and set(aware["reverted_layers"]).isdisjoint(quantized_layers(kept))


def test_max_drop_needs_labels(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((bundled_images("val") / "7").iterdir())[:3]:
        shutil.copy(f, flat / f.name)
    with pytest.raises(UserInputError, match="--max-drop needs a labelled evaluation set"):
        run_export(ExportOptions(out=tmp_path / "out", eval_dir=flat, int8=True, max_drop=0.5))
    assert not (tmp_path / "out").exists()


def test_calibration_images_in_odd_modes_and_a_corrupt_file(tmp_path):
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    sources = sorted((bundled_images("train") / "4").iterdir())[:12]
    for i, f in enumerate(sources):
        im = Image.open(f)
        mode = ("L", "RGBA", "I;16", "RGB")[i % 4]
        if mode == "I;16":
            im = Image.fromarray((np.asarray(im.convert("L"), np.uint16) * 257))
        else:
            im = im.convert(mode)
        im.save(calib / f"{i}.png")
    (calib / "broken.png").write_bytes(b"not an image")
    logs = []

    class Progress:
        from rmt_deploy.progress import NullProgress as _N
        step, bar = _N.step, _N.bar

        def log(self, message):
            logs.append(message)

    report = run_export(ExportOptions(out=tmp_path / "out", int8=True, calib=calib, calib_size=64,
                                      bench_iters=0, parity_samples=4), Progress())
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    assert int8["status"] == "ok" and int8["quantization"]["calib_images"] == 12
    assert any("broken.png" in m for m in logs) and any("fewer than --calib-size" in m for m in logs)


BAD_QUANT_ARGS = {
    "empty calibration folder": (["--int8", "--calib", "{tmp}/empty"], "no images"),
    "only corrupt calibration files": (["--int8", "--calib", "{tmp}/corrupt"], "could be decoded"),
    "too few calibration images": (["--int8", "--calib", "{tmp}/three"], "INT8 needs at least 8"),
    "calib size too small": (["--int8", "--calib-size", "2"], "--calib-size 2 is too small"),
    "negative max drop": (["--int8", "--max-drop", "-1"], "--max-drop -1.0 must be 0 or more"),
    "unknown statistic": (["--int8", "--statistic", "p99"], "--statistic 'p99' is unknown"),
}


@pytest.mark.parametrize("case", list(BAD_QUANT_ARGS))
def test_bad_quantization_input(case, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    for i in range(3):
        (tmp_path / "corrupt" / f"{i}.png").write_bytes(b"junk")
    (tmp_path / "three").mkdir()
    for f in sorted((bundled_images("train") / "1").iterdir())[:3]:
        shutil.copy(f, tmp_path / "three" / f.name)
    args, expected = BAD_QUANT_ARGS[case]
    out = tmp_path / "out"
    result = run("export", *[a.format(tmp=tmp_path) for a in args], "--out", str(out), "--bench-iters", "0")
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_max_drop_not_a_number(tmp_path):
    result = run("export", "--int8", "--max-drop", "half", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "max-drop" in result.stderr
