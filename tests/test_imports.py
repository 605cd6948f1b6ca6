"""Importing the package and CLI loads no optional backend (they are imported lazily)."""
from __future__ import annotations

import subprocess
import sys

OPTIONAL = ["tensorrt", "tensorrt_rtx", "coremltools", "openvino", "nncf", "onnxruntime", "onnxslim", "onnx"]


def test_import_loads_no_backend():
    code = ("import sys, rmt_deploy, rmt_deploy.cli, rmt_deploy.jobs.plan, rmt_deploy.targets; "
            f"print([m for m in {OPTIONAL!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
