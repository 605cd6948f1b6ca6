"""INT8 export: deploy form (token-layout FFN) → NNCF calibration → one encoding per runtime."""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..rewrite import to_deploy
from .calibrate import quantize_qdq
from .encode import for_onnxruntime
from .policy import QuantPolicy

__all__ = ["Int8Models", "calibrate_int8"]


@dataclass
class Int8Models:
    tensorrt: object  # onnx.ModelProto: the calibrated Q/DQ graph, TensorRT's explicit quantization
    onnxruntime: object  # the same scales re-encoded for ONNX Runtime's fused kernels
    float_model: object  # the FP32 graph that was calibrated (float weights for reverted layers)
    float_for_speed: list[str] = field(default_factory=list)  # layers ONNX Runtime runs faster in float
    calib_seconds: float = 0.0
    calib_images: int = 0


def calibrate_int8(model, size: tuple[int, int], samples: np.ndarray, policy: QuantPolicy,
                   dynamic_batch: bool) -> Int8Models:
    """Calibrate the reference ``model`` at ``size`` on ``samples`` (N, 3, H, W), preprocessed.

    The FFN runs as linear layers on tokens here (not 1x1 convs as in FP32): ONNX Runtime
    fuses int8 Gemm with a float output, but an int8 Conv only when its output is quantized.
    """
    import onnx

    from ..targets.onnx import INPUT_NAME, export

    deploy = to_deploy(model, size, ffn_layout="linear")
    with tempfile.TemporaryDirectory(prefix="rmt-int8-") as tmp:
        path = export(deploy, Path(tmp) / "fp32_tokens.onnx", size, dynamic_batch=dynamic_batch, metadata={})
        fp32 = onnx.load(str(path))
    start = time.perf_counter()
    qdq = quantize_qdq(fp32, samples, INPUT_NAME, policy)
    seconds = time.perf_counter() - start
    ort_model = copy.deepcopy(qdq)
    reverted = for_onnxruntime(ort_model, fp32)
    return Int8Models(qdq, ort_model, fp32, reverted, round(seconds, 2), int(len(samples)))
