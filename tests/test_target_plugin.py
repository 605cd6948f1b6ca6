"""A target from outside the package: one module and one entry point, and the CLI's help, doctor,
presets, the export and its report all see it — nothing in rmt_deploy is edited for it."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from .conftest import EXE

PLUGIN = '''
"""A toy target: the standard ONNX written under its own suffix, run by ONNX Runtime."""
from rmt_deploy.targets.base import Package
from rmt_deploy.targets.onnx import OnnxTarget


class ToyTarget(OnnxTarget):
    name, title, aliases, suffix = "toy", "Toy", ("toyrt",), ".toy.onnx"
    summary = "a test plugin"
    packages = (Package("toy_target", "toy-target", "the toy target (a test plugin)"),)


TARGET = ToyTarget()
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """A folder on PYTHONPATH holding the plugin module and its distribution's entry point."""
    site = tmp_path_factory.mktemp("plugin-site")
    (site / "toy_target.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "toy_target-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-target\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rmt_deploy.targets]\ntoy = toy_target:TARGET\n")
    env = {k: v for k, v in os.environ.items() if k != "RMT_DEPLOY_DEBUG"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])), COLUMNS="250")
    return env


def _run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_help_and_doctor_list_the_plugin_target(plugin_env):
    helped = _run(plugin_env, "export", "--help")
    assert helped.returncode == 0 and "toy (a test plugin)" in helped.stdout, helped.stdout
    assert ".toy.onnx (Toy)" in _run(plugin_env, "predict", "--help").stdout
    doctor = _run(plugin_env, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stderr
    found = json.loads(doctor.stdout)
    assert "toy" in [t["target"] for t in found["targets"]]
    assert {"package": "toy-target", "status": "ok"}.items() <= next(
        p for p in found["packages"] if p["package"] == "toy-target").items()


def test_a_preset_naming_the_plugin_exports_and_reports_it(plugin_env, tmp_path):
    preset = tmp_path / "toy.toml"
    preset.write_text('description = "the toy target"\ntargets = ["toyrt"]\n')  # by its alias
    out = tmp_path / "out"
    done = _run(plugin_env, "export", "--preset", str(preset), "--out", str(out), "--bench-iters", "0",
                "--parity-samples", "4")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    (entry,) = report["artifacts"]
    assert entry["target"] == "toy" and entry["status"] == "ok" and entry["path"] == "model.toy.onnx"
    assert entry["parity"]["max_abs"] < 1e-4 and (out / "model.toy.onnx").is_file()
    assert report["environment"]["packages"]["toy-target"] == "0.1"
    predicted = _run(plugin_env, "predict", str(out / "model.toy.onnx"), "--topk", "1", "--json")
    assert predicted.returncode == 0 and json.loads(predicted.stdout), predicted.stderr


def test_without_the_entry_point_the_target_is_unknown(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RMT_DEPLOY_DEBUG"}
    done = subprocess.run([EXE, "export", "--target", "toy", "--out", str(tmp_path / "o")], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 2 and "unknown target 'toy'" in done.stderr
