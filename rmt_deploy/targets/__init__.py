"""The target table: one ``Target`` per backend module (see ``base``), read by the CLI, the
export job, ``bench``, the report, ``doctor`` and the tests. A target's facts live in its own
module; nothing outside this package names one.

Targets from other packages join the table through the ``rmt_deploy.targets`` entry-point group
(``name = "module:TARGET"``), loaded when this package is imported.

Importing it loads no backend: target modules import theirs when they first need them.
"""
from __future__ import annotations

import difflib
import importlib.metadata
import warnings
from pathlib import Path

from ..errors import UserInputError
from ..optional import require
from .base import EXECUTIONS, Exported, ExportRequest, Int8Graph, Package, Sources, Target, TargetOptions
from .coreml import TARGET as _COREML
from .executorch import TARGET as _EXECUTORCH
from .litert import TARGET as _LITERT
from .mnn import TARGET as _MNN
from .onnx import TARGET as _ONNX
from .onnxruntime import TARGET as _ONNXRUNTIME
from .openvino import TARGET as _OPENVINO
from .tensorrt import TARGET as _TENSORRT

__all__ = ["TARGETS", "ONNX_FILES", "DEFAULT_TARGETS", "CORE_PACKAGES", "EXECUTIONS", "ENTRY_POINTS", "packages",
           "register", "check_execution", "resolve_target", "target_for_path", "Target", "TargetOptions", "Package",
           "ExportRequest", "Exported", "Int8Graph", "Sources", "require"]

ENTRY_POINTS = "rmt_deploy.targets"
TARGETS: dict[str, Target] = {}
ONNX_FILES = (_ONNX.name, _ONNXRUNTIME.name)  # targets whose artifacts are ONNX files run by ONNX Runtime
DEFAULT_TARGETS = (_ONNX.name,)  # what `export` writes when no --target is given
# What every target relies on (the reference model, the ONNX graph, ONNX Runtime's checks, NNCF).
CORE_PACKAGES = (
    Package("torch", "torch", "reference model, export"),
    Package("onnx", "onnx", "ONNX graphs"),
    Package("onnxslim", "onnxslim", "ONNX simplification"),
    Package("onnxruntime", "onnxruntime", "ONNX Runtime target, verification"),
    Package("nncf", "nncf", "INT8 calibration (--int8 for ONNX, TensorRT, OpenVINO)", "int8"),
)


def register(target: Target) -> Target:
    """Add ``target`` to the table (CLI help, doctor, presets, export, bench, reports all read it).

    Raises:
        ValueError: its name, an alias or its suffix is taken by a target already in the table.
    """
    taken = {n for t in TARGETS.values() for n in (t.name, *t.aliases)}
    clash = {target.name, *target.aliases} & taken
    if clash or not target.name or not target.suffix:
        raise ValueError(f"cannot register target {target.name!r}: "
                         + (f"{', '.join(sorted(clash))} already taken" if clash else "it needs a name and a suffix"))
    if any(t.suffix == target.suffix for t in TARGETS.values()):
        raise ValueError(f"cannot register target {target.name!r}: suffix {target.suffix} is taken")
    TARGETS[target.name] = target
    return target


def packages() -> tuple[Package, ...]:
    """Every package of the table, core ones first, each once: what doctor checks and reports record."""
    seen: dict[str, Package] = {}
    for package in (*CORE_PACKAGES, *(p for t in TARGETS.values() for p in t.packages)):
        seen.setdefault(package.dist, package)
    return tuple(seen.values())


def _register_installed() -> None:
    """Targets other packages declare under the ``rmt_deploy.targets`` entry-point group."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        try:
            register(entry.load())
        except Exception as e:  # noqa: BLE001 — a broken plugin must not take the built-in targets down
            warnings.warn(f"rmt-deploy: target plugin {entry.name} ({entry.value}) not loaded: {e}", stacklevel=2)


for _target in (_ONNX, _ONNXRUNTIME, _COREML, _TENSORRT, _OPENVINO, _EXECUTORCH, _LITERT, _MNN):
    register(_target)
_register_installed()


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
