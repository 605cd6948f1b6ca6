"""rmt-deploy sends nothing: the backends' usage telemetry is off unless the user chose it.

Observed through what each sender leaves in the home folder when it is on: ONNX Runtime a
device id under ~/.cache/Microsoft, openvino-telemetry a client id and usage counter under
~/intel (both appeared in a fresh home before the switch; the CI variable that some senders
honour is removed here)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import EXE

pytest.importorskip("openvino", reason="openvino not installed (pip install -e '.[openvino]')")
pytest.importorskip("nncf", reason="nncf not installed (pip install -e '.[int8]')")

SWITCHES = ("CI", "NNCF_CI", "NNCF_DEV", "ORT_DISABLE_TELEMETRY", "RMT_DEPLOY_DEBUG")


def _env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(HOME=str(home), COLUMNS="200")
    return env


def _files(home) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_int8_export_to_onnx_and_openvino_leaves_no_telemetry_trace(tmp_path):
    """ONNX Runtime sessions, NNCF calibration and OpenVINO conversion all run in this export."""
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run([EXE, "export", "--target", "onnx,openvino", "--int8", "--calib-size", "8",
                             "--bench-iters", "3", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env=_env(home), timeout=600)
    assert result.returncode == 0, result.stderr
    files = _files(home)
    assert not [f for f in files if f.startswith(("intel", ".cache/Microsoft"))], files


def _consent(home) -> list[str]:
    code = ("import rmt_deploy\n"
            "from rmt_deploy.targets import require\n"
            "require('openvino', 'openvino')\n"
            "from openvino_telemetry.utils.opt_in_checker import OptInChecker\n"
            "import os\n"
            "print(OptInChecker().check(False, False).name, os.environ['ORT_DISABLE_TELEMETRY'])\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(home),
                          check=True, timeout=120).stdout.split()


def test_an_explicit_choice_is_kept(tmp_path):
    undecided, opted_in = tmp_path / "undecided", tmp_path / "opted_in"
    undecided.mkdir()
    (opted_in / "intel").mkdir(parents=True)
    (opted_in / "intel" / "openvino_telemetry").write_text("1")
    assert _consent(undecided) == ["DECLINED", "1"]
    assert _consent(opted_in)[0] == "ACCEPTED"

    env = {**_env(undecided), "ORT_DISABLE_TELEMETRY": "0"}
    out = subprocess.run([sys.executable, "-c", "import os, rmt_deploy; print(os.environ['ORT_DISABLE_TELEMETRY'])"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == "0"
