"""Environment fingerprint recorded in every report."""
from __future__ import annotations

import importlib.metadata
import os
import platform

from ..cpu import cpu_features, cpu_name
from ..targets import packages

__all__ = ["environment"]

_OWN = ("rmt-deploy", "numpy", "safetensors")  # beside the target table's packages (targets.packages)


def environment() -> dict:
    versions = {}
    for name in (*_OWN, *(p.dist for p in packages())):
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
