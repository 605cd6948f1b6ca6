"""ONNX Runtime target: the deploy form in ONNX Runtime's own encoding (``model.ort.onnx``).

Fused ``Attention`` (opset 23) and ``com.microsoft.RotaryEmbedding`` (``rewrite.fused``): faster in
ONNX Runtime than the standard graph (RMT-T 224²: 1.21x FP32, 1.35x INT8, docs/figures.md "INT8 speed"),
and readable by ONNX Runtime >= 1.23 only —
OpenVINO, TensorRT and edge compilers refuse it. Hence its own target, file name and metadata
(``requires``); the standard ``model.onnx`` is the ``onnx`` target.
"""
from __future__ import annotations

from pathlib import Path

from .onnx import OnnxTarget

from .onnx_export import FUSED_REQUIRES

__all__ = ["TARGET", "OnnxRuntimeTarget", "MIN_VERSION"]

MIN_VERSION = (1, 23)  # the first ONNX Runtime with opset 23 Attention (FUSED_REQUIRES)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


class OnnxRuntimeTarget(OnnxTarget):
    name, title, aliases, suffix = "onnxruntime", "ONNX Runtime", ("ort",), ".ort.onnx"
    summary = "ONNX Runtime-tuned"
    precisions = ("fp32", "int8")  # FP16 runs the generic ops: --target onnx --fp16
    encoding = "onnxruntime"

    def unavailable_reason(self) -> str | None:
        missing = super().unavailable_reason()
        if missing:
            return missing
        import onnxruntime

        if _version(onnxruntime.__version__) < MIN_VERSION:
            need = ".".join(map(str, MIN_VERSION))
            return (f"onnxruntime {onnxruntime.__version__} is too old for the ONNX Runtime encoding "
                    f"({FUSED_REQUIRES}); run: pip install -U \"onnxruntime>={need}\", or use --target onnx "
                    "(standard ONNX)")
        return None

    def runtime_error(self, path: Path, runtime: str) -> str:
        standard = Path(path).name.replace(self.suffix, OnnxTarget.suffix)
        return (f"{Path(path).name} is ONNX Runtime-only ({FUSED_REQUIRES}); {runtime!r} is not an ONNX Runtime "
                f"execution provider here ({', '.join(self.runtimes()) or 'none'}). For OpenVINO or any other "
                f"runtime load {standard} (standard ONNX) or the OpenVINO IR (--target openvino)")


TARGET = OnnxRuntimeTarget()
