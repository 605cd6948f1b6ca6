"""The package as users install it: a wheel built from the checkout, installed into a fresh virtual
environment outside it, run from an empty folder.

The wheel is installed with ``--no-deps``; its dependencies come from this environment through a
path entry (not a site folder, so this environment's editable rmt-deploy is not on it), which keeps
the test off the network and off a second torch install. The wheel's own files are what is tested.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from rmt_deploy.version import __version__

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` on a copy of the checkout's package sources (the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "rmt_deploy", src / "rmt_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = dist.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel in it; returns its ``rmt-deploy`` script."""
    env = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    new_site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                            text=True).strip())
    deps = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    (new_site / "zz_test_dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    return env / "bin" / "rmt-deploy"


def _run(exe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RMT_DEPLOY_DEBUG", "VIRTUAL_ENV")}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env={**env, "COLUMNS": "200"},
                          timeout=900)


def test_the_wheel_carries_the_demo_images_and_presets(wheel):
    assert wheel.name == f"rmt_deploy-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    images = [n for n in names if n.startswith("rmt_deploy/assets/calib/") and n.endswith(".png")]
    assert len([n for n in images if "/train/" in n]) == 1437 and len([n for n in images if "/val/" in n]) == 360
    presets = {Path(n).stem for n in names if n.startswith("rmt_deploy/assets/presets/") and n.endswith(".toml")}
    assert presets == {p.stem for p in (REPO / "rmt_deploy" / "assets" / "presets").glob("*.toml")}
    assert "rmt_deploy/assets/rmt_demo.safetensors" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "tools/", "benches/"))]


def test_the_installed_wheel_works_from_an_empty_folder(installed, tmp_path):
    where = _run(installed.with_name("python"), "-c", "import rmt_deploy; print(rmt_deploy.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(installed.parents[1])), "rmt_deploy did not come from the wheel"
    version = _run(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"rmt-deploy {__version__}"
    presets = _run(installed, "presets", "--json", cwd=tmp_path)
    assert presets.returncode == 0 and {p["name"] for p in json.loads(presets.stdout)} >= {"ci-gate", "iphone-fp16"}
    export = _run(installed, "export", "--target", "onnx", "--bench-iters", "0", "--parity-samples", "4", cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-2000:]
    report = json.loads((tmp_path / "rmt-deploy-out" / "report.json").read_text())
    assert report["artifacts"][0]["status"] == "ok" and report["artifacts"][0]["accuracy"]["samples"] == 360
    predict = _run(installed, "predict", "rmt-deploy-out/model.onnx", "--topk", "1", "--json", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-2000:]
    rows = json.loads(predict.stdout)
    assert len(rows) == 360 and sum(r["names"][0] == Path(r["source"]).parent.name for r in rows) >= 350
    copied = _run(installed, "demo-images", "digits", cwd=tmp_path)
    assert copied.returncode == 0 and len(list((tmp_path / "digits" / "val").rglob("*.png"))) == 360
