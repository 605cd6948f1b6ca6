"""INT8 calibrates on the user's images: a checkpoint of one's own never calibrates on the bundled demo
digits unless asked (``--calib demo``), and the report names the set it calibrated on."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rmt_deploy.bundled import bundled_images, bundled_weights
from rmt_deploy.cli.app import app

FAST = ["--bench-iters", "0", "--parity-samples", "4", "--calib-size", "16"]


def _export(*args: str):
    result = CliRunner().invoke(app, ["export", *args, *FAST])
    return result.exit_code, result.output


@pytest.fixture
def own_checkpoint(tmp_path) -> Path:
    """The demo's weights under the user's own name: anything but the bundled file is the user's."""
    path = tmp_path / "my_rmt.safetensors"
    shutil.copy(bundled_weights(), path)
    return path


@pytest.mark.parametrize("args", [["--target", "onnx", "--int8"], ["--preset", "cpu-onnxruntime-int8"]],
                         ids=["int8", "quantizing-preset"])
def test_own_checkpoint_without_calib_is_refused_before_any_work(tmp_path, own_checkpoint, args):
    out = tmp_path / "out"
    code, output = _export("-w", str(own_checkpoint), *args, "--out", str(out))
    assert code == 2, output
    line = output.strip().splitlines()[-1]
    assert line.startswith("error:") and "--calib DIR" in line and "--calib demo" in line, output
    assert "Loading" not in output and not out.exists()  # one line, before the checkpoint is even read


def test_own_checkpoint_fp32_needs_no_calibration(tmp_path, own_checkpoint):
    code, output = _export("-w", str(own_checkpoint), "--target", "onnx", "--out", str(tmp_path / "out"))
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["calibration"] is None and report["verification"]["bundled_images"] is True


def test_calib_demo_on_purpose_is_named_in_the_report(tmp_path, own_checkpoint):
    out = tmp_path / "out"
    code, output = _export("-w", str(own_checkpoint), "--target", "onnx", "--int8", "--calib", "demo", "--out", str(out))
    assert code == 0, output
    assert "calibrating INT8 on the bundled demo digits" in output and "no --eval: parity checked" in output
    calibration = json.loads((out / "report.json").read_text())["calibration"]
    assert calibration["source"] == "demo" and calibration["images"] == 16
    assert Path(calibration["path"]) == bundled_images("train").resolve()
    assert "bundled demo digits" in (out / "report.md").read_text()


def test_users_calibration_folder_is_recorded_with_a_digest_of_its_files(tmp_path, own_checkpoint):
    calib = tmp_path / "calib"  # the user's images: a flat folder of 12 of the digits
    calib.mkdir()
    for i, src in enumerate(sorted((bundled_images("train") / "3").glob("*.png"))[:12]):
        shutil.copy(src, calib / f"img{i:02d}.png")
    out = tmp_path / "out"
    code, output = _export("-w", str(own_checkpoint), "--target", "onnx", "--int8", "--calib", str(calib),
                           "--out", str(out))
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    calibration = report["calibration"]
    names = "\n".join(f"img{i:02d}.png" for i in range(12))
    assert calibration == {"source": "user", "path": str(calib.resolve()), "images": 12,
                           "digest": hashlib.sha256(names.encode()).hexdigest()}
    md = (out / "report.md").read_text()
    assert f"`{calib.resolve()}`, 12 images" in md and "bundled demo digits" not in md
    assert "accuracy not measured" not in md  # the demo's own labels score it (parity on the bundled images)


def test_a_folder_named_demo_is_the_users_when_given_as_a_path(tmp_path, monkeypatch):
    from rmt_deploy.jobs.plan import options_from_flags

    assert options_from_flags({"calib": "demo"}).calib == "demo"
    assert options_from_flags({"calib": "./demo"}).calib == Path("demo")


def test_presets_say_what_a_users_checkpoint_must_add():
    from rmt_deploy.jobs.presets import list_presets

    needs = {p.name: p.needs for p in list_presets()}
    assert needs["cpu-onnxruntime-int8"] == ["--calib DIR"] and needs["jetson-orin-int8"] == ["--calib DIR"]
    assert needs["android-litert-int8"] == ["--calib DIR", "--eval DIR (labelled)"]
    assert needs["iphone-int8-weights"] == [] and needs["jetson-fp16"] == []  # weight-only INT8, FP16: no images
