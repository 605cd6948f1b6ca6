"""Environment fingerprint recorded in every report."""
from __future__ import annotations

import importlib.metadata
import os
import platform

__all__ = ["environment", "cpu_name"]

_PACKAGES = ("rmt-deploy", "torch", "onnx", "onnxruntime", "onnxslim", "numpy", "safetensors",
             "nncf", "openvino", "coremltools", "tensorrt", "tensorrt-rtx-cu12")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": None,
        "packages": versions,
    }
