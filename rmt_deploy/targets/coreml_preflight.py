"""Linux preflight of an ML program: what Core ML would reject or run differently, without a Mac.

Checks every tensor's rank (Core ML's limit is 5), lists the ops and which compute in FP16,
and the weights by dtype and size. The numerical check (the program's ops evaluated with
numpy vs PyTorch) is what export verification does with ``coreml.MilNumpyRunner``.
"""
from __future__ import annotations

from collections import Counter

__all__ = ["preflight", "MAX_RANK"]

MAX_RANK = 5


def preflight(program) -> dict:
    """Facts and problems of a MIL program (``coreml_mil.load_program`` or built in memory)."""
    from coremltools.converters.mil.mil import types

    ops: Counter = Counter()
    compute: Counter = Counter()  # dtype of each non-constant op's first output
    fp32_ops: Counter = Counter()
    weights: Counter = Counter()
    weight_bytes: Counter = Counter()
    too_high: list[str] = []
    max_rank = 0
    for function in program.functions.values():
        for var in function.inputs.values():
            max_rank = max(max_rank, _rank(var))
            if _rank(var) > MAX_RANK:
                too_high.append(f"input {var.name} (rank {_rank(var)})")
        for op in function.operations:
            ops[op.op_type] += 1
            for var in op.outputs:
                rank = _rank(var)
                max_rank = max(max_rank, rank)
                if rank > MAX_RANK:
                    too_high.append(f"{op.op_type} '{op.name}' (rank {rank})")
            if op.op_type == "const":  # compressed weights are consts feeding constexpr_* ops
                _count_weights(op, weights, weight_bytes, types)
            elif op.op_type.startswith("constexpr_"):
                continue
            elif op.outputs and types.is_tensor(op.outputs[0].sym_type):
                dtype = types.builtin_to_string(op.outputs[0].dtype)
                compute[dtype] += 1
                if dtype == "fp32":
                    fp32_ops[op.op_type] += 1
    problems = [f"{len(too_high)} tensor(s) above Core ML's rank limit of {MAX_RANK}: "
                + ", ".join(too_high[:5]) + (" …" if len(too_high) > 5 else "")] if too_high else []
    return {
        "status": "problems" if problems else "ok",
        "problems": problems,
        "max_rank": max_rank,
        "ops": dict(sorted(((k, v) for k, v in ops.items() if k != "const"), key=lambda kv: -kv[1])),
        "compute_dtypes": dict(compute),
        "fp16_compute_fraction": round(compute.get("fp16", 0) / max(sum(compute.values()), 1), 4),
        "fp32_ops": dict(fp32_ops),  # in an FP16 program: what stays FP32 (input/output casts)
        "weight_dtypes": dict(weights),
        "weight_bytes": dict(weight_bytes),
        "specification_version": _spec_version(program),
    }


def _rank(var) -> int:
    shape = getattr(var, "shape", None)
    return len(shape) if shape is not None else 0


def _count_weights(op, weights: Counter, weight_bytes: Counter, types) -> None:
    """Constant tensors that are weights (not shape/axis scalars), by stored dtype."""
    var = op.outputs[0]
    value = var.val
    if value is None or not hasattr(value, "nbytes") or value.size < 16:
        return
    if types.is_float(var.dtype) or types.is_int(var.dtype):
        name = types.builtin_to_string(var.dtype)
        weights[name] += 1
        weight_bytes[name] += int(value.nbytes)


def _spec_version(program) -> int | None:
    version = getattr(program.functions.get("main"), "opset_version", None)
    return int(version) if version is not None else None
