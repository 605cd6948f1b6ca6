"""OpenVINO INT8 graphs as NNCF writes them: list and revert quantized layers.

NNCF's OpenVINO backend puts a FakeQuantize (256 levels) on each quantized activation,
stores weights as int8 constants followed by Convert → Multiply(scale), and (bias
correction) changes the constant of the Add after the layer. Reverting a layer bypasses its
activation FakeQuantize and puts the float weights and bias of the calibrated model back;
the unused quantization nodes then fall out of the graph.
"""
from __future__ import annotations

from .accuracy_aware import Reverter
from .policy import OPENVINO_QUANTIZED_OPS, PAIR_SAFE_WEIGHT

__all__ = ["quantized_layers", "revert", "OPENVINO_FQ", "int8_summary", "weight_grid"]

_DEQUANTIZE = ("Multiply", "Subtract", "Convert", "Reshape", "Transpose")


def _is_fake_quantized(output) -> bool:
    return output.get_node().get_type_name() == "FakeQuantize"


def _int8_constant(output):
    """The int8/uint8 Constant behind Convert → [Subtract] → Multiply (a compressed weight), or None."""
    node = output.get_node()
    while node.get_type_name() in _DEQUANTIZE:
        node = node.input_value(0).get_node()
    if node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8"):
        return node
    return None


def _is_int8_weight(output) -> bool:
    return _int8_constant(output) is not None


def quantized_layers(model) -> list[str]:
    """Names of Convolution/GroupConvolution/MatMul ops whose data input is quantized, in order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in OPENVINO_QUANTIZED_OPS and _is_fake_quantized(op.input_value(0))]


def revert(model, names, original) -> list[str]:
    """Run the named layers of ``model`` in float again (in place); ``original`` is the FP32
    model that was calibrated. Returns the names actually reverted."""
    import openvino as ov

    wanted = set(names)
    float_ops = {op.get_friendly_name(): op for op in original.get_ops()}
    reverted = []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name not in wanted or op.get_type_name() not in OPENVINO_QUANTIZED_OPS:
            continue
        changed = False
        for i in range(op.get_input_size()):
            source = op.input_value(i)
            if _is_fake_quantized(source):
                op.input(i).replace_source_output(source.get_node().input_value(0))
                changed = True
            elif _is_int8_weight(source):
                weight = float_ops[name].input_value(i).get_node()
                if weight.get_type_name() != "Constant":
                    raise ValueError(f"{name}: the float model's input {i} is not a constant weight")
                op.input(i).replace_source_output(ov.op.Constant(weight.get_data().copy()).output(0))
                changed = True
        if changed:
            _restore_bias(op, float_ops)
            reverted.append(name)
    model.validate_nodes_and_infer_types()
    return reverted


def _restore_bias(op, float_ops: dict) -> None:
    """Put back the original constant of the bias Add that follows ``op`` (bias correction moved it)."""
    import openvino as ov

    for target in op.output(0).get_target_inputs():
        add = target.get_node()
        original = float_ops.get(add.get_friendly_name())
        if add.get_type_name() != "Add" or original is None:
            continue
        other = 1 - target.get_index()
        bias = original.input_value(other).get_node()
        if bias.get_type_name() == "Constant":
            add.input(other).replace_source_output(ov.op.Constant(bias.get_data().copy()).output(0))


OPENVINO_FQ = Reverter(quantized_layers, revert, lambda model: model.clone())


def int8_summary(model) -> dict:
    """Counts a report and the tests read: quantized layers, FakeQuantize levels, int8 weights."""
    levels = sorted({int(op.get_attributes()["levels"]) for op in model.get_ops()
                     if op.get_type_name() == "FakeQuantize"})
    weights = [op for op in model.get_ops() if op.get_type_name() == "Constant"
               and op.get_element_type().get_type_name() == "i8"]
    return {"quantized_layers": len(quantized_layers(model)),
            "fake_quantize": sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()),
            "levels": levels, "int8_weight_constants": len(weights)}


def weight_grid(model) -> dict:
    """Like ``checks.weight_grid`` for an OpenVINO model: the largest |int8 weight| of the layers
    that reduce over channels (depthwise GroupConvolutions left out) and those above
    ``PAIR_SAFE_WEIGHT``."""
    largest, saturating = 0, []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in OPENVINO_QUANTIZED_OPS or op.get_input_size() < 2:
            continue
        constant = _int8_constant(op.input_value(1))
        if constant is None:
            continue
        shape = list(op.input_value(1).get_partial_shape().to_shape())
        if op.get_type_name() == "GroupConvolution" and shape[2] == 1:  # (groups, out, in=1, kh, kw)
            continue
        peak = int(abs(constant.get_data().astype("int16")).max())
        largest = max(largest, peak)
        if peak > PAIR_SAFE_WEIGHT:
            saturating.append(op.get_friendly_name())
    return {"max_abs": largest, "saturating_layers": saturating}
