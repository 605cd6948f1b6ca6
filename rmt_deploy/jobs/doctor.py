"""`rmt-deploy doctor`: which backends are installed and usable here, and why not."""
from __future__ import annotations

import importlib
import importlib.metadata
import platform

from ..bundled import bundled_images, bundled_presets, bundled_weights
from ..cpu import cpu_features, cpu_name
from ..errors import UserInputError
from ..optional import install_hint
from ..quiet import native_quiet, quiet
from ..targets import TARGETS

__all__ = ["diagnose"]

# (package to import, distribution name, what it is for, extra that installs it)
_COMPONENTS = (
    ("torch", "torch", "reference model, export", None),
    ("onnx", "onnx", "ONNX graphs", None),
    ("onnxslim", "onnxslim", "ONNX simplification", None),
    ("onnxruntime", "onnxruntime", "ONNX Runtime target, verification", None),
    ("nncf", "nncf", "INT8 calibration (--int8 for ONNX, TensorRT, OpenVINO)", "int8"),
    ("coremltools", "coremltools", "CoreML target (.mlpackage; predict needs macOS)", "coreml"),
    ("openvino", "openvino", "OpenVINO target (IR, CPU/GPU/NPU runtime)", "openvino"),
    ("tensorrt", "tensorrt", "TensorRT engines (needs an NVIDIA GPU)", "trt"),
    ("tensorrt_rtx", "tensorrt-rtx-cu12", "TensorRT-RTX parse+build proxy (no GPU needed)", "trt-check"),
    ("executorch", "executorch", "ExecuTorch target (.pte, XNNPACK runtime)", "executorch"),
    ("litert_torch", "litert-torch", "LiteRT target (.tflite: converter, PT2E INT8)", "litert"),
    ("ai_edge_litert.interpreter", "ai-edge-litert", "LiteRT runtime (XNNPACK on the CPU)", "litert"),
    ("MNN", "mnn", "MNN target (.mnn: converter, quantizer and CPU runtime)", "mnn"),
)


def _component(module: str, dist: str) -> tuple[str, str]:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing", "not installed"
    try:
        with quiet(module), native_quiet():  # coremltools logs missing macOS libraries, MNN prints a banner
            importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 — a broken install must be reported, not crash doctor
        return "broken", f"{version} installed but import fails: {str(e).splitlines()[0][:120]}"
    return "ok", version


def _openvino_cpu_default() -> str | None:
    """What OpenVINO's CPU plugin computes float layers in by default here (bf16 on AVX512-BF16/AMX)."""
    if TARGETS["openvino"].unavailable_reason():
        return None
    from ..targets.openvino import device_default_precision

    return device_default_precision("CPU")


def diagnose() -> dict:
    """Rows for packages and targets, plus the machine facts that matter for deployment."""
    packages = []
    for module, dist, purpose, extra in _COMPONENTS:
        status, detail = _component(module, dist)
        hint = install_hint(extra) if status != "ok" and extra else None
        packages.append({"package": dist, "status": status, "detail": detail, "purpose": purpose,
                         "install": hint})
    targets = []
    for target in TARGETS.values():
        reason = target.unavailable_reason()
        try:
            runtimes = [] if reason else target.runtimes()
        except Exception as e:  # noqa: BLE001 — a broken runtime is what doctor is for
            reason = f"installed, but listing its runtimes fails: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
            runtimes = []
        detail = reason or (f"precisions: {', '.join(target.precisions)}; runs here on: "
                            + (", ".join(runtimes) or f"nothing ({target.no_runtime_reason()})"))
        targets.append({"target": target.name, "status": "ok" if reason is None else "unavailable", "detail": detail,
                        "runtimes": runtimes})
    providers = []
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        pass
    return {
        "machine": {
            "cpu": cpu_name(),
            "platform": platform.platform(),
            "cpu_features": cpu_features().to_dict(),
            "onnxruntime_providers": providers,
            "openvino_cpu_default_precision": _openvino_cpu_default(),
        },
        "packages": packages,
        "targets": targets,
        "bundled": {
            "demo_checkpoint": _bundled(bundled_weights),
            "calibration_images": _bundled(bundled_images, "train"),
            "evaluation_images": _bundled(bundled_images, "val"),
            "presets": _bundled(bundled_presets),
        },
    }


def _bundled(find, *args) -> str | None:
    """Where a bundled asset is, or None when the installed package lacks it."""
    try:
        return str(find(*args))
    except UserInputError:
        return None
