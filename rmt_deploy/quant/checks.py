"""Structural rules for INT8 graphs; each returns a list of problems (empty: the graph passes).

``tensorrt_problems`` is what TensorRT's explicit quantization accepts (docs/targets/tensorrt.md);
``onnxruntime_problems`` what our ONNX Runtime encoding promises.
"""
from __future__ import annotations

import numpy as np

from .encode import DATA_MOVEMENT, GraphIndex
from .policy import PAIR_SAFE_WEIGHT, QUANTIZED_OPS

__all__ = ["tensorrt_problems", "onnxruntime_problems", "quantizer_summary", "weight_grid"]

FLOAT_ONLY = ("LayerNormalization", "Softmax", "Erf", "Gelu", "Div")


def _array(idx: GraphIndex, name: str):
    from onnx import numpy_helper

    return numpy_helper.to_array(idx.init[name]) if name in idx.init else None


def _weight_axis_ok(node, dq, weight) -> bool:
    """Per-channel weight scales must run along the output channels."""
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % weight.ndim
    if node.op_type == "Conv":
        return axis == 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return axis == (0 if trans_b else 1)
    return axis == weight.ndim - 1  # MatMul: (..., K, N)


def tensorrt_problems(model) -> list[str]:
    idx = GraphIndex(model.graph)
    problems = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = _array(idx, node.input[2]) if len(node.input) > 2 else None
            scale = _array(idx, node.input[1])
            if zero is None or zero.dtype != np.int8 or zero.any():
                problems.append(f"{node.name}: zero point must be int8 0 (got "
                                f"{'none' if zero is None else f'{zero.dtype} {zero.ravel()[:3]}'})")
            if scale is None or not np.all(scale > 0):
                problems.append(f"{node.name}: scale must be a positive constant")
            activation = node.input[0] not in idx.init
            if activation and scale is not None and scale.size != 1:
                problems.append(f"{node.name}: activation scale must be per tensor (got {scale.size} values)")
            if node.op_type == "DequantizeLinear":
                for user in _users_through_movement(idx, node):
                    if user.op_type not in QUANTIZED_OPS:
                        problems.append(f"{node.name}: dequantized value feeds {user.op_type} {user.name} "
                                        "(only Conv/Gemm/MatMul inputs may be quantized)")
        elif node.op_type in QUANTIZED_OPS:
            for i in (0, 1):
                if not idx.is_dq(node, i):
                    problems.append(f"{node.name} ({node.op_type}): input {i} is not quantized")
                    continue
                dq = idx.parent(node, i)
                weight = _array(idx, dq.input[0])
                if weight is not None and np.ndim(_array(idx, dq.input[1])) == 1 and \
                        not _weight_axis_ok(node, dq, weight):
                    problems.append(f"{node.name}: weight scale axis is not the output-channel axis")
    return problems


def _users_through_movement(idx: GraphIndex, node) -> list:
    found, frontier = [], list(idx.users.get(node.output[0], []))
    while frontier:
        user = frontier.pop()
        if user.op_type in DATA_MOVEMENT:
            frontier += idx.users.get(user.output[0], [])
        else:
            found.append(user)
    return found


def onnxruntime_problems(model) -> list[str]:
    """Activations int8/zero point 0 or uint8/zero point 128; weights int8 zero point 0."""
    idx = GraphIndex(model.graph)
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero = _array(idx, node.input[2])
        values = _array(idx, node.input[0])
        if values is not None and values.dtype == np.int32:  # bias
            ok = zero is not None and zero.dtype == np.int32 and not zero.any()
        elif values is not None:  # weight
            ok = zero is not None and zero.dtype == np.int8 and not zero.any()
        else:
            ok = zero is not None and ((zero.dtype == np.int8 and not zero.any()) or
                                       (zero.dtype == np.uint8 and np.all(zero == 128)))
        if not ok:
            problems.append(f"{node.name}: zero point {None if zero is None else (zero.dtype, zero.ravel()[:3])} "
                            "is not symmetric")
    return problems


def quantizer_summary(model) -> dict:
    """Counts for the report: quantized layers by op type, Q and DQ nodes."""
    idx = GraphIndex(model.graph)
    layers: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type in QUANTIZED_OPS and idx.is_dq(n, 0):
            layers[n.op_type] = layers.get(n.op_type, 0) + 1
    ops = [n.op_type for n in model.graph.node]
    return {"quantized_layers": layers, "quantize_nodes": ops.count("QuantizeLinear"),
            "dequantize_nodes": ops.count("DequantizeLinear")}


def _is_depthwise(node, weight) -> bool:
    """A Conv with one input channel per group: no reduction over channels, so no u8 x s8 pairs."""
    return node.op_type == "Conv" and weight.ndim == 4 and weight.shape[1] == 1


def weight_grid(model) -> dict:
    """The int8 weight grid the graph really holds (see ``policy.WEIGHT_RANGES``).

    ``max_abs`` is the largest |int8 weight| of the layers that reduce over channels;
    ``saturating_layers`` those above ``PAIR_SAFE_WEIGHT``, i.e. wrong on x86 without VNNI.
    """
    idx = GraphIndex(model.graph)
    largest, saturating = 0, []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS or not idx.is_dq(node, 1):
            continue
        weight = _array(idx, idx.parent(node, 1).input[0])
        if weight is None or weight.dtype != np.int8 or _is_depthwise(node, weight):
            continue
        peak = int(np.abs(weight.astype(np.int16)).max())
        largest = max(largest, peak)
        if peak > PAIR_SAFE_WEIGHT:
            saturating.append(node.name)
    return {"max_abs": largest, "saturating_layers": saturating}
