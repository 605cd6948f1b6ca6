"""Export presets (rmt_deploy/assets/presets/*.toml): every shipped one loads and runs on the demo; bad ones are one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

from rmt_deploy.bundled import bundled_presets
from rmt_deploy.jobs.presets import PRESET_KEYS, list_presets, load_preset
from rmt_deploy.targets import TARGETS
from rmt_deploy.targets.tensorrt import engine_unavailable_reason

from .conftest import run

SHIPPED = sorted(p.stem for p in bundled_presets().glob("*.toml"))
NEEDS = {"coreml": "coremltools", "openvino": "openvino", "litert": "litert_torch", "trt": None}


def test_shipped_presets_load_and_are_listed():
    presets = list_presets()
    assert [p.name for p in presets] == SHIPPED and len(SHIPPED) >= 7
    for p in presets:
        assert p.description and p.options["targets"], p.name
    listed = run("presets", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == SHIPPED


def test_off_switches_and_other_targets_override_a_preset(tmp_path):
    # --no-int8 turns the preset's INT8 off; --target onnx drops the preset's CoreML target *and* its [coreml] settings.
    off = run("export", "--preset", "cpu-onnxruntime-int8", "--no-int8", "--out", str(tmp_path / "a"),
              "--bench-iters", "0", "--parity-samples", "2")
    assert off.returncode == 0, off.stderr
    assert {a["precision"] for a in json.loads((tmp_path / "a" / "report.json").read_text())["artifacts"]} == {"fp32"}
    other = run("export", "--preset", "iphone-fp16", "--target", "onnx", "--out", str(tmp_path / "b"),
                "--bench-iters", "0", "--parity-samples", "2")
    assert other.returncode == 0, other.stderr
    arts = json.loads((tmp_path / "b" / "report.json").read_text())["artifacts"]
    assert {a["target"] for a in arts} == {"onnx"} and {a["precision"] for a in arts} == {"fp32", "fp16"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_runs_on_the_demo(name, tmp_path):
    preset = load_preset(name)
    for target in preset.options["targets"]:
        if NEEDS.get(target):
            pytest.importorskip(NEEDS[target])
    out = tmp_path / "out"
    # Fast overrides only; the preset still picks targets, precisions, budgets and target options.
    # The demo's own size too: a detection preset's 800x1344 would cost minutes here.
    result = run("export", "--preset", name, "--out", str(out), "--bench-iters", "0", "--calib-size", "16",
                 "--parity-samples", "4", "--img-size", "64")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    written = {(a["target"], a["precision"]) for a in report["artifacts"]}
    wanted = {p for p in ("int8", "fp16", "fp32") if preset.options.get(p)}
    assert {t for t, _ in written} == set(preset.options["targets"])
    assert wanted <= {precision for _, precision in written}
    for a in report["artifacts"]:  # only a TensorRT engine may be missing, and only without a GPU to build it
        if a["target"] == "trt" and engine_unavailable_reason():
            assert a["status"] == "skipped" and "engine not built" in a["reason"], a
        else:
            assert a["status"] == "ok", a
    if preset.target_options.get("coreml", {}).get("image_input"):
        assert all(a["coreml"]["input"] == "image" for a in report["artifacts"] if a["target"] == "coreml")
    if preset.options.get("task") == "backbone":
        assert report["model"]["task"] == "backbone" and report["model"]["outputs"]
    if preset.options.get("max_drop") is not None:
        assert all("accuracy_aware" in a for a in report["artifacts"] if a["precision"] == "int8")


def test_flags_override_the_preset(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('targets = ["onnx"]\nimg-size = "96"\nbench-iters = 7\ncalib = "nowhere"\n')
    out = tmp_path / "out"
    result = run("export", "--preset", str(recipe), "--img-size", "64", "--out", str(out), "--parity-samples", "2")
    # calib is relative to the preset file and unused without --int8; img-size comes from the flag.
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_size"] == [64, 64]
    assert report["artifacts"][0]["latency_ms"]["iterations"] == 7


# names_file: the preset loader's own errors name the file; values it passes on get the flags' messages.
@pytest.mark.parametrize("text, message, names_file", [
    ('int8 = "yes"\n', "'int8' must be true/false, not 'yes'", True),
    ("targets = [\"onnx\"]\nturbo = true\n", "unknown key 'turbo'", True),
    ("[coreml]\nw8 = true\n", "unknown key 'coreml.w8'", True),
    ('require-engine = "yes"\n', "'require-engine' must be true/false", True),  # 0.2's top-level spelling
    ('[trt]\nrequire-engine = "yes"\n', "'trt.require-engine' must be true/false", True),
    ("calib-size = true\n", "'calib-size' must be a number, not True", True),
    ("targets = \"onnx\"\n", "'targets' must be a list", True),
    ("targets = [1]\n", "'targets' must be a list of target names", True),
    ("targets = [\n", "not valid TOML", True),
    ('statistic = "median"\n', "--statistic 'median' is unknown", False),
    ('targets = ["onnx"]\nimg-size = "100"\n', "100 is not a multiple of 32", False),
    ('targets = ["onxx"]\n', "did you mean 'onnx'", False),
])
def test_malformed_preset_is_a_one_line_error(tmp_path, text, message, names_file):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    result = run("export", "--preset", str(recipe), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (str(recipe) in result.stderr) == names_file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # nothing written


def test_unknown_preset_name_lists_the_shipped_ones(tmp_path):
    result = run("export", "--preset", "jetson-nano-int4", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "unknown preset 'jetson-nano-int4'" in result.stderr
    assert all(name in result.stderr for name in SHIPPED)


def test_every_preset_key_is_an_export_option():
    from dataclasses import fields

    from rmt_deploy.jobs.plan import ExportOptions

    assert {f for f, _ in PRESET_KEYS.values()} <= {f.name for f in fields(ExportOptions)}
    tables = {t.name: t.options_type for t in TARGETS.values() if t.options_type}
    assert set(tables) == {"coreml", "trt", "executorch"}
    for options in tables.values():
        assert {f for f, _ in options.KEYS.values()} == {f.name for f in fields(options)}
    for path in bundled_presets().glob("*.toml"):
        data = tomllib.loads(path.read_text())
        assert set(data) - {"description", *tables} <= set(PRESET_KEYS), path
        for name, options in tables.items():
            assert set(data.get(name, {})) <= set(options.KEYS), path
    assert Path(bundled_presets()).name == "presets"
