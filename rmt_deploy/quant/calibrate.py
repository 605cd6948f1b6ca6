"""NNCF calibration (ONNX backend) → the TensorRT-bound Q/DQ model.

The result is the one calibration every INT8 artifact derives from: int8 weights per
output channel, int8 activations per tensor, all zero points 0, Q/DQ in front of every
Conv, Gemm and MatMul input and nowhere else (see ``policy``).
"""
from __future__ import annotations


import numpy as np

from ..quiet import quiet
from ..targets import require
from .policy import QUANTIZED_OPS, STATISTICS, QuantPolicy

__all__ = ["quantize_qdq"]


def quantize_qdq(model, samples: np.ndarray, input_name: str, policy: QuantPolicy):
    """Calibrate ``model`` (onnx.ModelProto, FP32 deploy form) on ``samples`` (N, 3, H, W).

    Returns a new ModelProto with QuantizeLinear/DequantizeLinear pairs.
    """
    nncf = require("nncf", "int8")
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                       QuantizationParameters)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ignored = sorted({n.op_type for n in model.graph.node} - set(QUANTIZED_OPS))
    advanced = AdvancedQuantizationParameters(
        # TensorRT needs per-tensor activations and full 8-bit weights (no 7-bit first layer).
        activations_quantization_params=QuantizationParameters(per_channel=False),
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, STATISTICS[policy.statistic]),
        overflow_fix=OverflowFix.DISABLE,
    )
    dataset = nncf.Dataset([samples[i:i + 1] for i in range(len(samples))], lambda x: {input_name: x})
    with quiet("nncf"):  # NNCF logs every skipped node and draws its own progress bars
        quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(samples), fast_bias_correction=policy.fast_bias_correction,
                                  ignored_scope=nncf.IgnoredScope(types=ignored, validate=False),
                                  advanced_parameters=advanced)
    _unsigned_to_signed(quantized)
    return quantized


def _unsigned_to_signed(model) -> None:
    """NNCF encodes non-negative tensors (softmax output) as uint8, zero point 0. TensorRT takes
    int8 only: the same range [0, 255 s] becomes int8 with scale 255 s / 127 (one bit less
    resolution on that tensor, which is what TensorRT would run anyway)."""
    from onnx import numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    created: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero = numpy_helper.to_array(init[node.input[2]])
        if zero.dtype != np.uint8:
            continue
        if zero.any():
            raise ValueError(f"{node.name}: unexpected asymmetric quantizer (zero point {zero.ravel()[:3]})")
        scale_name, zero_name = node.input[1] + "_int8", node.input[2] + "_int8"
        if scale_name not in created:  # a Q and its DQ share their initializers
            scale = numpy_helper.to_array(init[node.input[1]]).astype(np.float32) * np.float32(255 / 127)
            model.graph.initializer.extend([numpy_helper.from_array(scale, scale_name),
                                            numpy_helper.from_array(np.zeros_like(zero, np.int8), zero_name)])
            created.add(scale_name)
        node.input[1], node.input[2] = scale_name, zero_name
    del model.graph.value_info[:]  # element types changed

