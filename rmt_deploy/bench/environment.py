"""Environment fingerprint recorded in every report."""
from __future__ import annotations

import importlib.metadata
import os
import platform

from ..cpu import cpu_features, cpu_name

__all__ = ["environment"]

_PACKAGES = ("rmt-deploy", "torch", "onnx", "onnxruntime", "onnxslim", "numpy", "safetensors",
             "nncf", "openvino", "coremltools", "tensorrt", "tensorrt-rtx-cu12", "executorch", "litert-torch",
             "ai-edge-litert", "mnn")


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
        "cpu_features": cpu_features().to_dict(),  # ISA and int8 accumulation: how to read INT8 figures
        "gpu": None,
        "packages": versions,
    }
