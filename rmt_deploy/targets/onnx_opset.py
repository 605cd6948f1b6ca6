"""Write a standard ONNX graph at a lower opset than the exporter's (18) where nothing changes.

torch's dynamo exporter writes opset 18 at the least, and onnx's version converter has no
18 → 17 adapter for Split. Between 17 and 18 only two ops of the deploy form changed form, not
meaning: Split takes ``num_outputs`` (17: equal parts when no ``split`` input is given) and the
Reduce ops take ``axes`` as an input (17: an attribute). Rewriting those two is enough to reach
opset 17 — the first with LayerNormalization, and the newest that JetPack 5's TensorRT 8.5 and
several NPU compilers parse. Any other op newer than the target opset is refused by name.
"""
from __future__ import annotations

import numpy as np

__all__ = ["lower_opset"]

_REDUCE_AXES_INPUT = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def lower_opset(proto, opset: int):
    """``proto`` (ai.onnx at a higher opset) rewritten in place to ``opset``; returns it.

    Raises:
        ValueError: an op whose form at ``opset`` differs and has no rewrite here.
    """
    import onnx
    from onnx import numpy_helper

    current = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if current <= opset:
        return proto
    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    shapes = _static_shapes(proto)
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        newest = onnx.defs.get_schema(node.op_type, current).since_version
        if newest <= opset:
            continue
        if node.op_type == "Split" and newest == 18:
            _equal_split(node, shapes)
        elif node.op_type in _REDUCE_AXES_INPUT and newest == 18:
            _axes_to_attribute(node, constants)
        else:
            raise ValueError(f"{node.name or node.op_type}: {node.op_type} changed after opset {opset} "
                             f"(opset {newest}); no rewrite to opset {opset}")
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    return proto


def _static_shapes(proto) -> dict[str, list]:
    """Tensor name → dims (None where symbolic), from ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in values if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}


def _equal_split(node, shapes: dict[str, list]) -> None:
    """Opset 18's ``num_outputs`` → opset 13's equal split (no ``split`` input), when the parts are equal."""
    if len(node.input) > 1 and node.input[1]:
        return  # explicit sizes: the same at opset 13
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    dims = shapes.get(node.input[0])
    size = dims[axis] if dims else None
    if size is None or size % len(node.output):
        raise ValueError(f"{node.name}: Split into {len(node.output)} parts of a dimension of {size}; opset 17 "
                         "splits only into known equal parts without explicit sizes")
    _drop_attribute(node, "num_outputs")


def _drop_attribute(node, name: str) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)


def _axes_to_attribute(node, constants: dict[str, np.ndarray]) -> None:
    from onnx import helper

    if len(node.input) < 2 or not node.input[1]:
        if any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
            raise ValueError(f"{node.name}: {node.op_type} with noop_with_empty_axes has no opset-17 form")
        _drop_attribute(node, "noop_with_empty_axes")
        return
    if node.input[1] not in constants:
        raise ValueError(f"{node.name}: {node.op_type} axes are computed in the graph; opset 17 needs constants")
    axes = [int(a) for a in np.asarray(constants[node.input[1]]).reshape(-1)]
    del node.input[1:]
    _drop_attribute(node, "noop_with_empty_axes")
    node.attribute.append(helper.make_attribute("axes", axes))
