"""The target table: one ``Target`` per backend module (see ``base``), read by the CLI, the
export job, ``bench``, the report, ``doctor`` and the tests.

Importing it loads no backend: target modules import theirs when they first need them.
"""
from __future__ import annotations

import difflib
from pathlib import Path

from ..errors import UserInputError
from ..optional import require
from .base import EXECUTIONS, Exported, ExportRequest, Int8Graph, Sources, Target, TargetOptions
from .coreml import TARGET as _COREML
from .executorch import TARGET as _EXECUTORCH
from .litert import TARGET as _LITERT
from .mnn import TARGET as _MNN
from .onnx import TARGET as _ONNX
from .onnxruntime import TARGET as _ONNXRUNTIME
from .openvino import TARGET as _OPENVINO
from .tensorrt import TARGET as _TENSORRT

__all__ = ["TARGETS", "ONNX_FILES", "EXECUTIONS", "check_execution", "resolve_target", "target_for_path", "Target",
           "TargetOptions", "ExportRequest", "Exported", "Int8Graph", "Sources", "require"]

TARGETS: dict[str, Target] = {t.name: t for t in (_ONNX, _ONNXRUNTIME, _COREML, _TENSORRT, _OPENVINO, _EXECUTORCH,
                                                 _LITERT, _MNN)}
ONNX_FILES = (_ONNX.name, _ONNXRUNTIME.name)  # targets whose artifacts are ONNX files run by ONNX Runtime


def resolve_target(name: str) -> Target:
    """Map a user-given target name or alias to its target.

    Raises:
        UserInputError: unknown target, with a suggestion.
    """
    key = name.strip().lower()
    for target in TARGETS.values():
        if key == target.name or key in target.aliases:
            return target
    names = list(TARGETS) + [a for t in TARGETS.values() for a in t.aliases]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserInputError(f"unknown target '{name}'{hint} (available: {', '.join(TARGETS)})")


def check_execution(execution: str) -> None:
    """Raise UserInputError unless ``execution`` is one of ``EXECUTIONS``."""
    if execution not in EXECUTIONS:
        raise UserInputError(f"--execution {execution!r} is unknown; choose {' or '.join(EXECUTIONS)}")


def target_for_path(path: Path) -> Target:
    """The target whose artifacts end like ``path`` (model_int8.onnx → onnx, model.ort.onnx → onnxruntime)."""
    for target in sorted(TARGETS.values(), key=lambda t: -len(t.suffix)):  # .ort.onnx before .onnx
        if Path(path).name.endswith(target.suffix):
            return target
    raise UserInputError(f"{path}: unknown artifact type; expected one of "
                         f"{', '.join(t.suffix for t in TARGETS.values())}")
