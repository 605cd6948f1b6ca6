"""docs/ci.md's GitHub Actions job, run as a user's repository runs it: a scratch repository holding
only a checkpoint and images, the job's `run:` steps in bash, in order. The install step finds a
cached virtual environment (this one), as a job does after its first run: no network here."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rmt_deploy.bundled import bundled_images, bundled_weights

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _github_job() -> dict:
    yaml = pytest.importorskip("yaml")
    page = (REPO / "docs" / "ci.md").read_text()
    block = re.search(r"## GitHub Actions.*?```yaml\n(.*?)```", page, re.S).group(1)
    return yaml.safe_load(block)


def _scratch_repository(root: Path) -> None:
    """What the page says the user's repository holds, and a cached .venv that is this environment."""
    (root / "checkpoints").mkdir(parents=True)
    shutil.copy(bundled_weights(), root / "checkpoints" / "model.safetensors")
    calib = root / "data" / "calib"
    calib.mkdir(parents=True)
    for i, image in enumerate(sorted(bundled_images("train").rglob("*.png"))[::8]):
        shutil.copy(image, calib / f"{i:03d}.png")
    shutil.copytree(bundled_images("val"), root / "data" / "val")
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "rmt-deploy").symlink_to(Path(sys.executable).with_name("rmt-deploy"))
    (venv_bin / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')


def test_the_github_job_runs_in_a_repository_that_is_not_rmt_deploy(tmp_path):
    job = _github_job()
    (steps,) = [j["steps"] for j in job["jobs"].values()]
    runs = [s for s in steps if "run" in s]
    assert [s["name"] for s in runs] == ["Install rmt-deploy", "Export FP32 and INT8, verified on your images", "Gate"]
    repo = tmp_path / "my-model"
    _scratch_repository(repo)
    env = {**{k: v for k, v in os.environ.items() if k != "RMT_DEPLOY_DEBUG"}, **job["env"]}
    for step in runs:
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=1200)
        assert done.returncode == 0, f"{step['name']}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
    out = repo / "deploy-out"
    assert {"model.onnx", "model_int8.onnx", "report.json", "report.md", "check.xml"} <= {p.name for p in out.iterdir()}
    kept = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert kept["with"]["path"].rstrip("/") == out.name and kept.get("if") == "always()"
    assert "data/calib" in (out / "report.md").read_text()  # calibrated on the repository's images, not the demo's
