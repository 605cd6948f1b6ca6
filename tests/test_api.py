"""The Python API (rmt_deploy.export / load / bench / check) and `rmt-deploy predict`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rmt_deploy as rd
from rmt_deploy.bundled import bundled_images

from .conftest import run

VAL = sorted(bundled_images("val").rglob("*.png"))
FAST = dict(bench_iters=0, parity_samples=4, calib_size=16)


def _label(prediction: rd.Prediction) -> str:
    return Path(prediction.source).parent.name  # ImageFolder: the class is the folder name


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> rd.Report:
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("api") / "out"
    return rd.export(targets=["onnx", "openvino"], int8=True, fp16=True, out=out, **FAST)


def test_import_is_light():
    code = ("import sys, rmt_deploy; "
            "print([m for m in ('torch', 'onnxruntime', 'onnx', 'openvino', 'nncf', 'coremltools') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_export_returns_the_written_report(exported):
    assert exported.ok and exported.report_path.name == "report.json"
    on_disk = json.loads(exported.report_path.read_text())
    assert exported.to_dict() == on_disk  # the types serialise to report.json, key for key
    again = rd.Report.from_dict(on_disk)
    again.artifacts[0].details["reviewed"] = True  # what is set after reading is written too
    again.extra["ci_run"] = 7
    written = again.to_dict()
    assert written["artifacts"][0]["reviewed"] is True and written["ci_run"] == 7
    assert exported.artifacts[0].parity.cosine == on_disk["artifacts"][0]["parity"]["cosine"]
    int8 = exported.artifact("onnx", "int8")
    assert int8.ok and int8.parity.cosine > 0.99 and int8.details["quantization"]["weight_bits"] == 7
    assert {(a.target, a.precision) for a in exported.artifacts} == {
        ("onnx", "fp32"), ("onnx", "int8"), ("onnx", "fp16"), ("openvino", "int8"), ("openvino", "fp16")}


def test_api_export_equals_the_cli_export(tmp_path):
    api = rd.export(out=tmp_path / "api", **FAST)
    cli = run("export", "--out", str(tmp_path / "cli"), "--bench-iters", "0", "--parity-samples", "4",
              "--calib-size", "16")
    assert cli.returncode == 0, cli.stderr
    by_cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    mine = api.to_dict()
    for volatile in ("created", "environment", "peak_rss_mb"):  # measured per run
        mine.pop(volatile), by_cli.pop(volatile)
    for a in mine["artifacts"] + by_cli["artifacts"]:
        a.pop("export_seconds")
    assert mine == by_cli


@pytest.mark.parametrize("name", ["model.onnx", "model_int8.onnx", "model_fp16.onnx", "model_int8.xml",
                                  "model_fp16.xml"])
def test_predict_gives_the_right_digit(exported, name):
    images = VAL[::10]
    with rd.load(exported.report_path.parent / name) as model:
        predictions = model.predict(images, topk=3)
    assert len(predictions) == len(images) and all(p.ok for p in predictions)
    assert all(len(p.indices) == 3 and p.probabilities == sorted(p.probabilities, reverse=True) for p in predictions)
    right = sum(p.names[0] == _label(p) for p in predictions)
    # The report's accuracy on the same kind of images: the demo model gets them all right.
    assert right == len(images), [(p.source, p.names[0]) for p in predictions if p.names[0] != _label(p)]


def test_predict_accepts_images_arrays_and_tensors_and_skips_what_it_cannot_read(exported, tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    with rd.load(exported.report_path.parent / "model.onnx") as model:
        image = Image.open(VAL[0])
        wrong_size = image.resize((97, 131))  # any size is resized as the metadata says, not rejected
        inputs = [VAL[0], str(VAL[0]), image, np.asarray(image.convert("RGB")), model.tensor(VAL[0]), junk, wrong_size,
                  np.zeros((2, 5), np.float32)]
        results = model.predict(inputs, topk=1, batch=3)
        batch = model.predict(np.stack([model.tensor(p) for p in VAL[:4]]), topk=1)
    assert [r.ok for r in results] == [True, True, True, True, True, False, True, False]
    assert "no image" in results[7].error  # a bad array is skipped like an unreadable file
    first = {r.probabilities[0] for r in results[:5]}
    assert len(first) == 1 and results[0].names[0] == _label(results[0])  # the same image, every way in
    assert "not an image" in results[5].error and results[5].source == str(junk)
    assert [r.names[0] for r in batch] == [p.parent.name for p in VAL[:4]]


def test_predict_through_the_coreml_numpy_evaluator(tmp_path):
    pytest.importorskip("coremltools")
    report = rd.export(targets=["coreml"], out=tmp_path / "out", **FAST)
    with rd.load(tmp_path / "out" / "model_fp16.mlpackage") as model:
        predictions = model.predict(VAL[::60], topk=1)
    assert all(p.names[0] == _label(p) for p in predictions) and report.ok


def test_bench_and_check_return_the_report_types(exported, tmp_path):
    folder = exported.report_path.parent
    timed = rd.bench([folder / "model.onnx"], batch=[1, 2], iters=3, min_time=0, out=tmp_path / "bench",
                     reference=False, eval=bundled_images("val"))
    assert timed.to_dict() == json.loads(timed.report_path.read_text())  # accuracy without an FP32 reference too
    assert timed.artifacts[0].accuracy.top1 > 90 and timed.artifacts[0].accuracy.drop is None
    assert timed.artifacts[0].latency.p50 > 0 and timed.artifacts[0].latency.batch == 1
    gate = rd.check(exported.report_path, max_drop=0.5)  # the demo loses no top-1 point in any precision
    assert gate.passed and gate.to_dict()["passed"] and not gate.failed
    assert {r.check for r in gate.results} >= {"status", "accuracy"}
    # A cosine floor above what INT8 reaches fails the INT8 artifacts (never FP32), and says why.
    strict = rd.check(exported.report_path, max_drop=0.5, min_cosine=0.99999)
    failed = {r.artifact for r in strict.failed}
    assert not strict.passed and not strict.to_dict()["passed"] and {"onnx/int8", "openvino/int8"} <= failed
    assert "onnx/fp32" not in failed and all(r.check.startswith("cosine") for r in strict.failed)


def test_report_paths_load_from_any_directory(exported, tmp_path, monkeypatch):
    folder = exported.report_path.parent
    monkeypatch.chdir(folder.parent)
    report = rd.Report.read(Path(folder.name) / "report.json")  # read by a relative path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    int8 = report.artifact("onnx", "int8")
    assert Path(int8.path).is_absolute() and Path(int8.path).parent == folder.resolve()
    with rd.load(int8.path) as model:
        assert model.predict(VAL[0], topk=1)[0].names[0] == _label(model.predict(VAL[0], topk=1)[0])
    timed = rd.bench(report.artifact("openvino", "fp16").path, iters=2, min_time=0, out="bench", reference=False)
    assert timed.ok and (elsewhere / "bench" / "report.json").exists()
    # report.json keeps relative names: the folder can move with its artifacts.
    assert report.to_dict() == json.loads((folder / "report.json").read_text())
    assert report.to_dict()["artifacts"][1]["path"] == "model_int8.onnx"
    assert exported.artifact("onnx", "fp32").path == str(folder.resolve() / "model.onnx")


def test_a_preset_is_overridden_by_the_keywords_written(tmp_path):
    report = rd.export(preset="cpu-onnxruntime-int8", int8=False, out=tmp_path / "out", **FAST)
    assert [(a.target, a.precision) for a in report.artifacts] == [("onnxruntime", "fp32")]  # like --no-int8


def test_bad_input_is_one_clear_error(exported, tmp_path):
    with pytest.raises(rd.UserInputError, match="multiple of 32"):
        rd.export(img_size=(70, 70), out=tmp_path / "never")
    with pytest.raises(rd.UserInputError, match="runtime 'bogus' is not available"):
        rd.load(exported.report_path.parent / "model.onnx", runtime="bogus")
    with pytest.raises(rd.UserInputError, match="not an rmt-deploy report"):
        (tmp_path / "r.json").write_text("{}")
        rd.Report.read(tmp_path / "r.json")
    with pytest.raises(rd.UserInputError, match="artifact not found"):
        rd.load(tmp_path / "missing.onnx")
    odd = tmp_path / "model.pt"
    odd.write_bytes(b"x")
    with pytest.raises(rd.UserInputError, match="unknown artifact type"):
        rd.load(odd)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(rd.UserInputError, match="not an ONNX model"):
        rd.load(broken)
    with pytest.raises(rd.UserInputError, match="no target|unknown target"):
        rd.export(targets=["ncnn"], out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_foreign_artifact_needs_its_preprocessing(tmp_path):
    import onnx

    from rmt_deploy.data.images import Preprocess

    plain = tmp_path / "plain.onnx"
    proto = onnx.load(str(Path(rd.export(out=tmp_path / "out", **FAST).report_path).parent / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(plain))
    with pytest.raises(rd.UserInputError, match="no rmt-deploy metadata"):
        rd.load(plain)
    with rd.load(plain, preprocess=Preprocess((64, 64))) as model:
        (p,) = model.predict(VAL[0], topk=2)
    assert p.ok and p.names == [None, None] and len(p.indices) == 2  # no class names without metadata


def test_predict_command(exported, tmp_path):
    folder = exported.report_path.parent
    junk = tmp_path / "junk.jpg"
    junk.write_text("no")
    shown = run("predict", str(folder / "model_int8.onnx"), str(VAL[0]), str(junk), "--topk", "2")
    assert shown.returncode == 2, shown.stderr  # an input was not read: never a silent 0
    assert "predictions" in shown.stdout and "skipped" in shown.stdout
    assert "1 of 2 input(s) could not be read: junk.jpg" in shown.stderr and "--skip-unreadable" in shown.stderr
    on_purpose = run("predict", str(folder / "model_int8.onnx"), str(VAL[0]), str(junk), "--skip-unreadable")
    assert on_purpose.returncode == 0, on_purpose.stderr
    as_json = run("predict", str(folder / "model_int8.onnx"), str(VAL[0].parent), "--json", "--topk", "1")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert len(rows) == len(list(VAL[0].parent.glob("*.png"))) and all(r["names"][0] == VAL[0].parent.name for r in rows)
    missing = run("predict", str(folder / "nope.onnx"), str(VAL[0]))
    assert missing.returncode == 2 and "artifact not found" in missing.stderr and "Traceback" not in missing.stderr


def test_predict_exits_2_in_one_line_when_nothing_could_be_read(exported, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("a text file named .png")
    for extra in ([], ["--skip-unreadable"]):
        done = run("predict", str(exported.report_path.parent / "model.onnx"), str(tmp_path), *extra)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
        assert "none of the 2 input(s) could be read" in line and "empty.jpg" in line and "text.png" in line


def test_predict_without_images_runs_on_the_bundled_ones_from_any_folder(exported, tmp_path):
    done = run("predict", str(exported.report_path.parent / "model.onnx"), "--json", "--topk", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == len(VAL) and sum(r["names"][0] == Path(r["source"]).parent.name for r in rows) >= 0.95 * len(VAL)


def _exif_rotated(image: Image.Image, orientation: int) -> tuple[Image.Image, Image.Exif]:
    """``image`` stored as a camera that was turned would store it, with the EXIF tag that undoes it."""
    undo = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return image.transpose(undo), exif


def test_exif_orientation_is_applied_like_a_viewer_does(exported, tmp_path):
    """A phone photo stored rotated with Orientation 6 (or any of 2-8) predicts what its upright copy does."""
    upright = Image.open(VAL[40]).convert("RGB")
    paths = [tmp_path / "upright.png"]
    upright.save(paths[0])
    for orientation in range(2, 9):
        stored, exif = _exif_rotated(upright, orientation)
        paths.append(tmp_path / f"orientation{orientation}.png")
        stored.save(paths[-1], exif=exif)
    with rd.load(exported.report_path.parent / "model.onnx") as model:
        results = model.predict(paths, topk=1)
        ignored = model.predict(_exif_rotated(upright, 6)[0], topk=1)[0]  # the pixels alone, without the tag
    want = results[0]
    assert want.names[0] == VAL[40].parent.name
    for r in results[1:]:
        assert r.indices == want.indices and abs(r.probabilities[0] - want.probabilities[0]) <= 1e-3, r.source
    assert ignored.indices != want.indices or abs(ignored.probabilities[0] - want.probabilities[0]) > 1e-3
    assert _metadata(exported.report_path.parent / "model.onnx")["exif"] == "orientation applied"


def _metadata(path: Path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


@pytest.mark.parametrize("mode", ["P", "RGBA", "CMYK", "I;16", "LA"])
def test_every_pixel_format_predicts_like_rgb(exported, tmp_path, mode):
    """Palette, alpha, CMYK (JPEG) and 16-bit files of one photo give its class and probability."""
    rgb = Image.open(VAL[100]).convert("RGB")
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    else:
        converted = rgb.convert(mode)
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    converted.save(path, **({"quality": 100} if mode == "CMYK" else {}))
    with rd.load(exported.report_path.parent / "model.onnx") as model:
        want, got = model.predict([rgb, path], topk=1)
    assert got.ok and got.indices == want.indices and abs(got.probabilities[0] - want.probabilities[0]) <= 2e-2


def test_public_functions_show_no_private_parameters():
    """help() and the API reference (read from the source) show only what a user passes."""
    import ast
    import inspect

    import rmt_deploy.api as api

    tree = ast.parse(Path(api.__file__).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in api.__all__:
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            assert not [n for n in names if n.startswith("_")], node.name
            assert not [n for n in inspect.signature(getattr(api, node.name)).parameters if n.startswith("_")]
