"""INT8: FP32 deploy-form graph (token-layout FFN) → NNCF calibration → one encoding per runtime.

Graph in, graphs out: the caller exports the FP32 graph (``targets.onnx_export.export_for_calibration``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from .calibrate import quantize_qdq
from .encode import for_onnxruntime
from .policy import QuantPolicy

__all__ = ["Int8Models", "calibrate_int8"]


@dataclass
class Int8Models:
    qdq: object  # onnx.ModelProto: the calibrated Q/DQ graph (TensorRT's explicit quantization with policy "full")
    onnxruntime: object  # the same scales re-encoded for ONNX Runtime's fused kernels
    float_model: object  # the FP32 graph that was calibrated (float weights for reverted layers)
    float_for_speed: list[str] = field(default_factory=list)  # layers ONNX Runtime runs faster in float
    calib_seconds: float = 0.0
    calib_images: int = 0


def calibrate_int8(fp32, samples: np.ndarray, policy: QuantPolicy) -> Int8Models:
    """Calibrate ``fp32`` (onnx.ModelProto of the deploy form with its FFN as linear layers on
    tokens) on ``samples`` (N, 3, H, W), preprocessed.

    Token-layout linears, not 1x1 convs as in FP32: ONNX Runtime fuses int8 Gemm/MatMul with a
    float output, but an int8 Conv only when its output is quantized.
    """
    start = time.perf_counter()
    qdq = quantize_qdq(fp32, samples, fp32.graph.input[0].name, policy)
    seconds = time.perf_counter() - start
    ort_model = copy.deepcopy(qdq)
    reverted = for_onnxruntime(ort_model, fp32)
    for model in (qdq, ort_model):  # the export's tap map (rewrite.taps): tensor names survive calibration
        _keep_metadata(fp32, model)
    return Int8Models(qdq, ort_model, fp32, reverted, round(seconds, 2), int(len(samples)))


def _keep_metadata(source, model) -> None:
    have = {p.key for p in model.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in have:
            model.metadata_props.add(key=prop.key, value=prop.value)
