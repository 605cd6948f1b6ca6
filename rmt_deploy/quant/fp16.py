"""FP16 ONNX: weights and activations in half precision, FP32 inputs and outputs.

Uses ONNX Runtime's converter (ships with onnxruntime; no extra dependency). Weights whose
magnitude leaves the FP16 range are clamped by the converter; ``FLOAT_OPS`` stay FP32 where
measurement showed FP16 hurts (none needed for RMT so far: see the report's parity).
"""
from __future__ import annotations

from ..quiet import quiet

__all__ = ["to_fp16", "FLOAT_OPS"]

FLOAT_OPS: tuple[str, ...] = ()


def to_fp16(model, keep_io_types: bool = True):
    """Return an FP16 copy of ``model`` (onnx.ModelProto); inputs/outputs stay FP32 by default."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked = _size_dependent_nodes(model)
    with quiet("onnxruntime.transformers.float16"):
        half = convert_float_to_float16(model, keep_io_types=keep_io_types,
                                        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FLOAT_OPS),
                                        node_block_list=blocked)
    _drop_repeated_casts(half.graph)
    _skip_round_trips(half.graph, set(blocked))
    _sort_topologically(half.graph)  # the converter appends its input casts at the end
    return half


def _size_dependent_nodes(model) -> list[str]:
    """Names of the nodes that depend on the input's size but not on its values: a dynamic-size graph's
    decay and rotary tables (rewrite.tables). They stay FP32: a rotary phase such as 4095 × 1.0 has
    no FP16 value within a radian."""
    valued = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type != "Shape" and any(name in valued for name in node.input):
            valued.update(node.output)
    sized = {o for n in model.graph.node if n.op_type == "Shape" for o in n.output}
    names = []
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Shape" or any(o in valued for o in node.output):
            continue
        if any(name in sized for name in node.input):
            sized.update(node.output)
            node.name = node.name or f"size_dependent_{i}"
            names.append(node.name)
    return names


def _skip_round_trips(graph, blocked: set[str]) -> None:
    """Between two FP32 nodes of the table subgraph the converter still writes Cast(fp16) → Cast(fp32):
    a position index above 2048 or a phase would lose its value there. Their consumers read the FP32
    tensor instead, and the casts that no longer feed anything are removed."""
    producer = {o: n for n in graph.node for o in n.output}
    bypass = {}
    for node in graph.node:
        inner = producer.get(node.input[0]) if node.op_type == "Cast" and _cast_to(node) == 1 else None
        if inner is None or inner.op_type != "Cast" or _cast_to(inner) != 10:
            continue
        source = producer.get(inner.input[0])
        if source is not None and source.name in blocked:
            bypass[node.output[0]] = inner.input[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in bypass:
                node.input[i] = bypass[name]
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for n in graph.node for name in n.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


def _cast_to(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_repeated_casts(graph) -> None:
    """The converter writes one Cast per blocked consumer of a tensor, all with the same output name;
    keep the first (graph outputs must be produced once)."""
    seen: set[str] = set()
    kept = []
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] in seen:
            continue
        seen.update(node.output)
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _sort_topologically(graph) -> None:
    """Kahn's algorithm over node indices, keeping the original order among ready nodes."""
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output}
    deps = [{producer[name] for name in n.input if name in producer} for n in graph.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) != len(graph.node):
        raise ValueError("FP16 graph has a cycle")
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)
