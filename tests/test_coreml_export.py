"""`export --target coreml` end to end on the demo: report, preflight, numbers, bench, bad input."""
from __future__ import annotations

import json
import platform
import shutil

import pytest

from rmt_deploy.bundled import bundled_images

from .conftest import run

pytest.importorskip("coremltools", reason="coremltools not installed (pip install -e '.[coreml]')")


@pytest.fixture(scope="module")
def small_eval(tmp_path_factory):
    """4 real images per class: accuracy through the numpy evaluator in seconds, not minutes."""
    root = tmp_path_factory.mktemp("eval") / "val"
    for folder in sorted(bundled_images("val").iterdir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:4]:
            shutil.copy(image, root / folder.name / image.name)
    return root


@pytest.fixture(scope="module")
def coreml_run(tmp_path_factory, small_eval):
    out = tmp_path_factory.mktemp("coreml") / "out"
    result = run("export", "--target", "onnx", "--target", "coreml", "--int8", "--fp16", "--image-input",
                 "--eval", str(small_eval), "--parity-samples", "4", "--bench-iters", "3",
                 "--license", "CC-BY-4.0", "--out", str(out))
    return result, out


def test_coreml_fp16_and_int8_packages_in_one_report(coreml_run):
    result, out = coreml_run
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    arts = {(a["target"], a["precision"]): a for a in report["artifacts"]}
    # ONNX always adds its FP32 baseline; CoreML writes only what was asked for.
    assert set(arts) == {("onnx", "fp32"), ("onnx", "int8"), ("onnx", "fp16"), ("coreml", "int8"), ("coreml", "fp16")}
    for precision in ("fp16", "int8"):
        a = arts["coreml", precision]
        assert a["status"] == "ok" and (out / a["path"]).is_dir() and a["path"].endswith(".mlpackage")
        assert a["graph"]["status"] == "ok" and a["graph"]["max_rank"] <= 5
        assert a["accuracy"]["samples"] == 40 and a["accuracy"]["drop"] <= 0.3 and a["accuracy"]["agreement"] >= 0.99
        assert a["latency_ms"] is None and "macOS" in a["latency_skipped"] and "numpy" in a["verified_with"]
        assert a["coreml"] == {"min_target": "iOS16", "input": "image"}
    assert arts["coreml", "fp16"]["parity"]["cosine"] >= 0.999
    assert "int8" in arts["coreml", "int8"]["graph"]["weight_dtypes"]
    assert arts["coreml", "int8"]["size_bytes"] < 0.7 * arts["coreml", "fp16"]["size_bytes"]
    md = (out / "report.md").read_text()
    assert "| coreml | fp16 | ok |" in md and "preflight **ok**" in md and "latency not measured" in md


def test_package_metadata_is_app_ready(coreml_run):
    import coremltools as ct

    _, out = coreml_run
    spec = ct.models.MLModel(str(out / "model_fp16.mlpackage"), skip_model_load=True).get_spec()
    meta = spec.description.metadata
    assert meta.license == "CC-BY-4.0" and meta.author == "rmt-deploy" and "rmt-demo" in meta.shortDescription
    user = dict(meta.userDefined)
    assert json.loads(user["class_names"]) == [str(i) for i in range(10)] and user["input_size"] == "64x64"
    assert user["input_kind"] == "image" and user["precision"] == "fp16"
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"


def test_bench_reports_coreml_as_skipped_off_macos(coreml_run, tmp_path):
    _, out = coreml_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = run("bench", "--from", str(copy), "--iters", "3", "--no-reference")
    assert result.returncode == 0, result.stderr
    report = json.loads((copy / "report.json").read_text())
    cells = [c for a in report["artifacts"] if a["target"] == "coreml" for c in a["benchmarks"]]
    assert cells and all(c["status"] == "skipped" and "macOS" in c["reason"] for c in cells)


BAD_COREML_ARGS = {
    "int8-on-ios15": (["--target", "coreml", "--int8", "--min-target", "iOS15"], "iOS16"),
    "unknown-os": (["--target", "coreml", "--min-target", "iOS99"], "--min-target 'iOS99' is unknown"),
    "w8a8-on-linux": (["--target", "coreml", "--int8", "--w8a8", "--min-target", "iOS17"], "only on macOS"),
    "coreml-flag-without-coreml": (["--target", "onnx", "--image-input"], "add --target coreml"),
}


@pytest.mark.parametrize("case", sorted(BAD_COREML_ARGS))
def test_bad_coreml_input(case, tmp_path):
    if case == "w8a8-on-linux" and platform.system() == "Darwin":
        pytest.skip("W8A8 calibration works on macOS")
    args, expected = BAD_COREML_ARGS[case]
    out = tmp_path / "out"
    result = run("export", *args, "--out", str(out), "--bench-iters", "0")
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
