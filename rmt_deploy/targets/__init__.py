"""Target registry: one row per backend, read by the CLI, the exporter, reports and tests.

Every target module exposes ``export(...) -> Path``, ``load(path, ...) -> Runner`` and
``unavailable_reason() -> str | None``, and imports its backend lazily (``require``, re-exported
here for the target modules).
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import UserInputError
from ..optional import require

__all__ = ["TargetSpec", "TARGETS", "resolve_target", "target_module", "require"]


@dataclass(frozen=True)
class TargetSpec:
    name: str
    aliases: tuple[str, ...]
    suffix: str
    precisions: tuple[str, ...]
    module: str  # rmt_deploy.targets.<module>
    extra: str | None  # pip extra that installs the backend
    needs: str | None = None  # "nvidia-gpu" / "macos" when running needs hardware
    default_precision: str = "fp32"  # written when no precision flag is given
    always_fp32: bool = False  # FP32 written on every run: the baseline other precisions compare to
    dynamic_batch: bool = True  # supports --dynamic-batch (otherwise batch 1)
    calibrated_int8: bool = False  # INT8 needs activation calibration on images


TARGETS: dict[str, TargetSpec] = {
    "onnx": TargetSpec("onnx", ("onnxruntime", "ort"), ".onnx", ("fp32", "int8", "fp16"), "onnx", None,
                       always_fp32=True, calibrated_int8=True),
    "coreml": TargetSpec("coreml", ("mlpackage", "mlprogram"), ".mlpackage", ("fp16", "fp32", "int8"), "coreml",
                         "coreml", needs="macos", default_precision="fp16", dynamic_batch=False),
    "trt": TargetSpec("trt", ("tensorrt", "engine"), ".engine", ("fp16", "int8", "fp32"), "tensorrt", "trt",
                      needs="nvidia-gpu", default_precision="fp16", calibrated_int8=True),
    "openvino": TargetSpec("openvino", ("ov", "ir"), ".xml", ("fp16", "int8", "fp32"), "openvino", "openvino",
                           default_precision="fp16", calibrated_int8=True),
}


def resolve_target(name: str) -> TargetSpec:
    """Map a user-given target name or alias to its spec.

    Raises:
        UserInputError: unknown or not yet available target, with a suggestion.
    """
    key = name.strip().lower()
    for spec in TARGETS.values():
        if key == spec.name or key in spec.aliases:
            return spec
    available = ", ".join(TARGETS)
    names = list(TARGETS) + [a for s in TARGETS.values() for a in s.aliases]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserInputError(f"unknown target '{name}'{hint} (available: {available})")


def target_module(spec: TargetSpec) -> ModuleType:
    return importlib.import_module(f"{__name__}.{spec.module}")
