"""Taps: named module boundaries where an artifact's tensors are compared with the reference.

A tap is named by the deploy form's module path (``stem``, ``stages.2.blocks.5``,
``stages.2.downsample``, ``head`` …), which the export records in every artifact's metadata
(``TAPS_KEY``: tap → tensor name in that artifact). This module knows, for each tap:

- where it is in the deploy form (``deploy_scope``): the output of the last op of that module
  path consumed outside it — found by ``scope_outputs`` from the exporter's per-op module scopes;
- what it is in the reference model (``ReferenceTaps``): a forward hook on the official
  module (``layers.i.blocks.j``, ``patch_embed`` …) with the deploy form's folding undone
  (layer scale ``gamma`` is folded into the deploy branch outputs, so the hook multiplies it in).

Layouts: the reference keeps tokens channels-last (B, H, W, C); the deploy form's stem and its
channels-first FFN produce NCHW, which ``to_reference_layout`` transposes back. The q/k channel
permutation inside heads (``tables.evens_then_odds``) never reaches a tap: taps are module outputs,
after ``out_proj``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["LEVELS", "TAPS_KEY", "tap_names", "all_taps", "deploy_scope", "scope_outputs", "encode_taps", "decode_taps",
           "ReferenceTaps", "to_reference_layout", "GraphOp"]

LEVELS = ("stage", "block", "op-group")
TAPS_KEY = "rmt_deploy.taps"  # artifact metadata: JSON {tap: [tensor name, fallbacks…]}
_OP_GROUP = ("norm1", "attn", "norm2", "ffn")  # inside a block, in forward order
_DATA_MOVEMENT = {"Transpose", "Reshape", "transpose", "reshape", "Identity", "identity", "cast", "Cast"}


def tap_names(cfg, level: str) -> list[str]:
    """Taps of a model with config ``cfg`` at ``level``, in forward (depth) order."""
    names = ["stem"]
    for i, depth in enumerate(cfg.depths):
        last = i == len(cfg.depths) - 1
        if level == "stage":
            names.append(f"stages.{i}")
            continue
        for j in range(depth):
            block = f"stages.{i}.blocks.{j}"
            if level == "op-group":
                names += [f"{block}.{part}" for part in _OP_GROUP]
            names.append(block)
        if not last:
            names.append(f"stages.{i}.downsample")
    return names + ["head"]


def all_taps(cfg) -> list[str]:
    """Every tap of every level (what the export records)."""
    return sorted(set(tap_names(cfg, "op-group")) | set(tap_names(cfg, "stage")))


def deploy_scope(tap: str) -> str:
    """The deploy-form module path whose output is ``tap`` (the FFN ends in ``fc2``)."""
    return tap[: -len(".ffn")] + ".fc2" if tap.endswith(".ffn") else tap


@dataclass(frozen=True)
class GraphOp:
    """One op of an exported graph as ``scope_outputs`` needs it, in topological order."""

    scope: str  # module path of the op ('' for the root module)
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _inside(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(path + ".")


def scope_outputs(ops: list[GraphOp], graph_outputs: Iterable[str], taps: Iterable[str]) -> dict[str, list[str]]:
    """tap → tensor names: the output of the last op in the tap's scope that is used outside
    the scope (or is a graph output), then the inputs of the data-movement ops (transposes,
    reshapes) that produce it — fallbacks for when a simplifier removes the first."""
    users: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            users.setdefault(name, []).append(i)
        for name in op.outputs:
            producer[name] = i
    finals = set(graph_outputs)
    # A dynamic-size graph reads the input's size inside scopes (Shape → Gather …); those
    # integers are used outside the scope but are never a tap's activation.
    sizes: set[str] = set()
    for op in ops:
        computed = [n for n in op.inputs if n in producer]
        if op.op_type == "Shape" or (computed and all(n in sizes for n in computed)):
            sizes.update(op.outputs)
    found: dict[str, list[str]] = {}
    for tap in taps:
        path = deploy_scope(tap)
        chosen = None
        for i, op in enumerate(ops):
            if not _inside(op.scope, path):
                continue
            for name in op.outputs:
                if name in sizes:
                    continue
                if name in finals or any(not _inside(ops[u].scope, path) for u in users.get(name, [])):
                    chosen = name
        if chosen is None:
            continue
        names = [chosen]
        while ops[producer[names[-1]]].op_type in _DATA_MOVEMENT and ops[producer[names[-1]]].inputs:
            prev = ops[producer[names[-1]]].inputs[0]
            if prev not in producer or not _inside(ops[producer[prev]].scope, path):
                break
            names.append(prev)
        found[tap] = names
    return found


def encode_taps(found: dict[str, list[str]], present: set[str]) -> str:
    """The metadata value: each tap's candidates that exist in the final graph, first = preferred."""
    return json.dumps({tap: [n for n in names if n in present] for tap, names in found.items()
                       if any(n in present for n in names)}, separators=(",", ":"))


def decode_taps(metadata: dict) -> dict[str, str] | None:
    """tap → tensor name from an artifact's metadata; None when the artifact has no tap map."""
    raw = metadata.get(TAPS_KEY)
    if not raw:
        return None
    return {tap: names[0] for tap, names in json.loads(raw).items() if names}


def to_reference_layout(value: np.ndarray, reference_shape: tuple[int, ...]) -> np.ndarray | None:
    """``value`` in the reference's layout: as is, or NCHW → NHWC; None when neither fits."""
    if tuple(value.shape) == tuple(reference_shape):
        return value
    if value.ndim == 4 and tuple(value.transpose(0, 2, 3, 1).shape) == tuple(reference_shape):
        return value.transpose(0, 2, 3, 1)
    return None


def _reference_path(tap: str) -> tuple[str, str | None]:
    """(module path in the reference RMT, layer-scale attribute to multiply in or None)."""
    if tap == "stem":
        return "patch_embed", None
    if tap == "head":
        return "head", None
    path = "layers" + tap[len("stages"):]
    for deploy, ref, gamma in (("norm1", "retention_layer_norm", None), ("norm2", "final_layer_norm", None),
                               ("attn", "retention", "gamma_1"), ("ffn", "ffn", "gamma_2")):
        if path.endswith("." + deploy):
            return path[: -len(deploy)] + ref, gamma
    return path, None


class ReferenceTaps:
    """Forward hooks that record each tap of a reference ``RMT`` (channels-last, float32)."""

    def __init__(self, model, taps: Iterable[str]) -> None:
        self.model, self.taps = model, list(taps)
        self.values: dict[str, list[np.ndarray]] = {t: [] for t in self.taps}
        self._handles = []

    def __enter__(self) -> ReferenceTaps:
        modules = dict(self.model.named_modules())
        for tap in self.taps:
            path, gamma = _reference_path(tap)
            if path not in modules:
                raise KeyError(f"tap {tap!r}: the reference model has no module {path!r}")
            block = modules[path.rsplit(".", 1)[0]] if gamma else None
            scale = getattr(block, gamma) if gamma and getattr(block, "layerscale", False) else None
            self._handles.append(modules[path].register_forward_hook(self._hook(tap, scale)))
        return self

    def _hook(self, tap: str, scale):
        def record(module, inputs, output) -> None:
            out = output if scale is None else output * scale
            self.values[tap].append(out.detach().float().numpy().copy())
        return record

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def arrays(self) -> dict[str, np.ndarray]:
        return {tap: np.concatenate(v) for tap, v in self.values.items() if v}
