"""NNCF calibration with our policy, for both of NNCF's backends we use.

``quantize_qdq`` (ONNX backend) gives the TensorRT-bound Q/DQ model that the ONNX Runtime
encoding also derives from: int8 weights per output channel, int8 activations per tensor,
all zero points 0, Q/DQ in front of every Conv, Gemm and MatMul input and nowhere else (see
``policy``). ``quantize_openvino`` applies the same policy to an OpenVINO model.
"""
from __future__ import annotations

import numpy as np

from ..optional import require
from ..quiet import quiet
from .policy import OPENVINO_QUANTIZED_OPS, QUANTIZED_OPS, STATISTICS, QuantPolicy

__all__ = ["quantize_qdq", "quantize_openvino"]


def quantize_qdq(model, samples: np.ndarray, input_name: str, policy: QuantPolicy):
    """Calibrate ``model`` (onnx.ModelProto, FP32 deploy form) on ``samples`` (N, 3, H, W).

    Returns a new ModelProto with QuantizeLinear/DequantizeLinear pairs.
    """
    op_types = {n.op_type for n in model.graph.node}
    quantized = _quantize(model, samples, lambda x: {input_name: x}, policy, op_types - set(QUANTIZED_OPS))
    _unsigned_to_signed(quantized)
    _shapes_read_float(quantized)
    return quantized


def _shapes_read_float(model) -> None:
    """A dynamic-size graph reads its sizes from tensors (Shape); NNCF rewires every consumer of a
    quantized tensor, those Shape ops too. They read the float tensor again: its shape is the same,
    and TensorRT takes Q/DQ only in front of the layers that compute in int8."""
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Shape":
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            node.input[0] = q.input[0]


def quantize_openvino(model, samples: np.ndarray, policy: QuantPolicy):
    """Calibrate an ``openvino.Model`` (FP32 deploy form) on ``samples``: FakeQuantize on the
    inputs of the same layers as ``quantize_qdq``, int8 weight constants."""
    op_types = {op.get_type_name() for op in model.get_ops()}
    return _quantize(model, samples, lambda x: x, policy, op_types - set(OPENVINO_QUANTIZED_OPS))


def _quantize(model, samples: np.ndarray, feed, policy: QuantPolicy, ignored_types: set[str]):
    """``nncf.quantize`` with the policy's settings; every op type but the quantized ones ignored."""
    nncf = require("nncf", "int8")
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, OverflowFix,
                                                       QuantizationParameters)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = AdvancedQuantizationParameters(
        # TensorRT needs per-tensor activations.
        activations_quantization_params=QuantizationParameters(per_channel=False),
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, STATISTICS[policy.statistic]),
        # NNCF's overflow fix puts the weights of every layer that sums over channels (all but the
        # depthwise convs) on the 7-bit grid (see policy.WEIGHT_RANGES).
        overflow_fix=OverflowFix.ENABLE if policy.weight_bits == 7 else OverflowFix.DISABLE,
    )
    # One image per item: items may differ in size (benches/bench_int8_sizes.py calibrates a dynamic graph at several).
    dataset = nncf.Dataset([np.ascontiguousarray(x)[None] for x in samples], feed)
    with quiet("nncf"):  # NNCF logs every skipped node and draws its own progress bars
        return nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE,
                             subset_size=len(samples), fast_bias_correction=policy.fast_bias_correction,
                             ignored_scope=nncf.IgnoredScope(types=sorted(ignored_types), validate=False),
                             advanced_parameters=advanced)


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

