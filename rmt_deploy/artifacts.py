"""Artifacts on disk: one file (.onnx), a folder (.mlpackage) or a file pair (OpenVINO .xml +
.bin, a TensorRT .engine + its .json sidecar). Sizes and deletion cover every part."""
from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["artifact_parts", "artifact_bytes", "remove_artifact", "artifact_stem"]


def artifact_parts(path: Path) -> list[Path]:
    """The paths that make up one artifact."""
    path = Path(path)
    companion = {".xml": ".bin", ".engine": ".json"}.get(path.suffix)
    return [path, path.with_suffix(companion)] if companion else [path]


def artifact_bytes(path: Path) -> int:
    total = 0
    for part in artifact_parts(path):
        if part.is_dir():
            total += sum(f.stat().st_size for f in part.rglob("*") if f.is_file())
        elif part.exists():
            total += part.stat().st_size
    return total


def remove_artifact(path: Path) -> None:
    for part in artifact_parts(path):
        if part.is_dir():
            shutil.rmtree(part)
        else:
            part.unlink(missing_ok=True)


def artifact_stem(precision: str) -> str:
    """model.onnx for FP32, model_int8.onnx / model_fp16.onnx otherwise."""
    return "model" if precision == "fp32" else f"model_{precision}"
