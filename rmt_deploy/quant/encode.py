"""Q/DQ graph surgery on the calibrated model: revert layers, re-encode for ONNX Runtime.

A "layer" is a Conv, Gemm or MatMul node; it is quantized when its inputs come from
DequantizeLinear nodes. Activation quantizers are QuantizeLinear → DequantizeLinear pairs on
a computed tensor; weight quantizers are a DequantizeLinear on an int8 initializer.
"""
from __future__ import annotations

import numpy as np

from .policy import QUANTIZED_OPS

__all__ = ["quantized_layers", "revert", "for_onnxruntime", "DATA_MOVEMENT", "GraphIndex"]

# Ops that only move values: a per-tensor quantizer commutes with them, and ONNX Runtime
# moves Q/DQ across them to fuse int8 kernels.
DATA_MOVEMENT = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


class GraphIndex:
    """Producers, consumers and initializers of one graph (rebuilt after each edit)."""

    def __init__(self, graph) -> None:
        self.init = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.users: dict[str, list] = {}
        for n in graph.node:
            for name in n.input:
                self.users.setdefault(name, []).append(n)

    def parent(self, node, i: int):
        return self.producer.get(node.input[i]) if i < len(node.input) else None

    def is_dq(self, node, i: int) -> bool:
        p = self.parent(node, i)
        return p is not None and p.op_type == "DequantizeLinear"


def quantized_layers(model) -> list[str]:
    """Names of Conv/Gemm/MatMul nodes whose data input is quantized, in graph order."""
    idx = GraphIndex(model.graph)
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and idx.is_dq(n, 0)]


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else a.f
    return default


def _dequantized_weight(idx: GraphIndex, dq):
    """A weight DequantizeLinear as the float initializer it computes."""
    from onnx import numpy_helper

    q = numpy_helper.to_array(idx.init[dq.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(idx.init[dq.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(idx.init[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 else 0.0
    if np.ndim(scale) == 1:
        shape = [1] * q.ndim
        shape[_attr(dq, "axis", 1) % q.ndim] = -1
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
    return (q - zero) * scale


def revert(model, names, original=None) -> list[str]:
    """Run the named layers in float again (in place); returns the names actually reverted.

    Activation inputs bypass their Q/DQ pair. Weights and biases come from ``original`` (the
    FP32 model that was calibrated; NNCF keeps node names) when given — calibration also
    corrects biases for quantization error, which a float layer must not keep — else the
    weight quantizer is dequantized. Quantizers left without users are removed.
    """
    from onnx import numpy_helper

    wanted = set(names)
    graph = model.graph
    idx = GraphIndex(graph)
    source = GraphIndex(original.graph) if original is not None else None
    source_nodes = {n.name: n for n in original.graph.node} if original is not None else {}
    done = []
    for node in graph.node:
        if node.name not in wanted or node.op_type not in QUANTIZED_OPS or not idx.is_dq(node, 0):
            continue
        before = source_nodes.get(node.name)
        for i in range(len(node.input)):
            name = f"{node.name}_float_input{i}"
            if before is not None and i > 0 and i < len(before.input) and before.input[i] in source.init:
                graph.initializer.append(numpy_helper.from_array(
                    numpy_helper.to_array(source.init[before.input[i]]), name))
                node.input[i] = name
                continue
            dq = idx.parent(node, i)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in idx.init:  # weight (or bias) without an original: dequantize it
                graph.initializer.append(numpy_helper.from_array(_dequantized_weight(idx, dq), name))
                node.input[i] = name
            else:
                q = idx.producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    node.input[i] = q.input[0]
        if source is not None:  # a MatMul's bias lives in the Add after it
            for add in idx.users.get(node.output[0], []):
                before_add = source_nodes.get(add.name)
                if add.op_type != "Add" or before_add is None:
                    continue
                for i, name in enumerate(add.input):
                    if name in idx.init and i < len(before_add.input) and before_add.input[i] in source.init:
                        restored = f"{add.name}_float_input{i}"
                        graph.initializer.append(numpy_helper.from_array(
                            numpy_helper.to_array(source.init[before_add.input[i]]), restored))
                        add.input[i] = restored
        done.append(node.name)
    _drop_unused(model)
    return done


def _drop_unused(model) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then unreferenced initializers."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for n in graph.node for name in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {name for n in graph.node for name in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _output_quantized(idx: GraphIndex, node) -> bool:
    """Every path from ``node``'s output, through data movement only, ends in a QuantizeLinear."""
    frontier = list(idx.users.get(node.output[0], []))
    if not frontier:
        return False
    while frontier:
        user = frontier.pop()
        if user.op_type == "QuantizeLinear":
            continue
        if user.op_type not in DATA_MOVEMENT:
            return False
        nxt = idx.users.get(user.output[0], [])
        if not nxt:
            return False
        frontier += nxt
    return True


def _has_weight(idx: GraphIndex, node) -> bool:
    """A linear layer (constant second input) rather than an activation x activation MatMul."""
    dq = idx.parent(node, 1)
    return dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in idx.init


def for_onnxruntime(model, original=None) -> list[str]:
    """Re-encode the calibrated Q/DQ model (in place) for ONNX Runtime's fused int8 kernels.

    Same scales, different placement and encoding (measured on RMT-T, see benches/):
    - Linear layers stay int8 (Gemm → QGemm, MatMul → MatMulIntegerToFloat; float
      output). Attention MatMuls (activation x activation) go back to float: their
      int8 form ran slower than float here. Convs stay int8 only where their output is
      quantized anyway (the FFN depthwise conv feeding fc2), which ONNX Runtime fuses into an
      NHWC QLinearConv; any other int8 Conv would dequantize its weights on every run.
    - Activations become uint8 with zero point 128: the same symmetric grid, in the type
      ONNX Runtime's u8s8 kernels expect.
    - Biases become int32 (scale = activation scale x weight scale) so Gemm fuses to QGemm.

    Returns the names of the layers reverted to float.
    """
    reverted: list[str] = []
    while True:  # reverting a conv can unquantize the output of the conv before it
        idx = GraphIndex(model.graph)
        slow = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and idx.is_dq(n, 0) and (
            (n.op_type == "MatMul" and not _has_weight(idx, n)) or
            (n.op_type == "Conv" and not _output_quantized(idx, n)))]
        if not slow:
            break
        reverted += revert(model, slow, original)
    _activations_to_uint8(model)
    _int32_biases(model)
    del model.graph.value_info[:]  # element types changed; let the runtime infer them again
    return reverted


def _activations_to_uint8(model) -> None:
    from onnx import numpy_helper

    graph = model.graph
    idx = GraphIndex(graph)
    zero = "rmt_deploy_zero_point_u8"
    graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), zero))
    for q in list(graph.node):
        if q.op_type != "QuantizeLinear" or q.input[0] in idx.init:
            continue
        if numpy_helper.to_array(idx.init[q.input[2]]).any():
            raise ValueError(f"{q.name}: expected a symmetric quantizer (zero point 0)")
        q.input[2] = zero
        for dq in idx.users.get(q.output[0], []):
            dq.input[2] = zero
    _drop_unused(model)


def _int32_biases(model) -> None:
    """Float bias of a quantized Gemm/Conv → int32 through its own DequantizeLinear."""
    from onnx import helper, numpy_helper

    graph = model.graph
    idx = GraphIndex(graph)
    new_nodes = []
    for node in graph.node:
        if node.op_type not in ("Gemm", "Conv") or len(node.input) < 3 or node.input[2] not in idx.init:
            continue
        if not (idx.is_dq(node, 0) and idx.is_dq(node, 1)):
            continue
        a, w = idx.parent(node, 0), idx.parent(node, 1)
        s_a = numpy_helper.to_array(idx.init[a.input[1]]).astype(np.float64)
        s_w = numpy_helper.to_array(idx.init[w.input[1]]).astype(np.float64)
        bias = numpy_helper.to_array(idx.init[node.input[2]]).astype(np.float64)
        scale = s_a * s_w * np.ones_like(bias)
        q = np.clip(np.round(bias / scale), -2**31, 2**31 - 1).astype(np.int32)
        base = f"{node.name}_bias_int32"
        graph.initializer.extend([numpy_helper.from_array(q, base),
                                  numpy_helper.from_array(scale.astype(np.float32), base + "_scale"),
                                  numpy_helper.from_array(np.zeros_like(q), base + "_zero_point")])
        new_nodes.append(helper.make_node("DequantizeLinear", [base, base + "_scale", base + "_zero_point"],
                                          [base + "_dq"], name=base + "_dq", axis=0))
        node.input[2] = base + "_dq"
    # They read initializers only, so the front of the graph keeps it topologically sorted.
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(model)
