"""`rmt-deploy compare --isolate`: each block's (or op-group's) own INT8 error.

The artifact is run with only one tap's layers quantized at a time — every other quantized layer
reverted to float with the accuracy-aware search's machinery (``quant.accuracy_aware.Reverter``,
the same ``revert`` that search uses) — and its logits compared with PyTorch's. The error then
comes from that tap's layers alone, not from everything before them. A tap's layers are the
quantized Conv/Gemm/MatMul nodes after the previous tap's tensor up to its own (at op-group
level, the block's position conv counts with ``norm1``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..bench.taps import CompareResult, tap_error
from ..errors import UserInputError

__all__ = ["isolate", "group_layers"]


def group_layers(graph, layers: list[str], taps: list[str], tap_map: dict[str, str]) -> dict[str, list[str]]:
    """tap → the quantized layers (node names) between the previous tap and it, in graph order."""
    index = {n.name: i for i, n in enumerate(graph.node)}
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    bounds = [(producer[tap_map[t]], t) for t in taps if t in tap_map and tap_map[t] in producer]
    groups: dict[str, list[str]] = {t: [] for _, t in bounds}
    for layer in layers:
        at = index[layer]
        owner = next((t for bound, t in bounds if at <= bound), None)
        if owner is not None:
            groups[owner].append(layer)
    return groups


def isolate(path: Path, result: CompareResult, ctx: dict, opts, progress) -> list[dict]:
    """The ``--isolate`` ranking, worst first; also fills ``isolated_rel_l2`` on the result's taps."""
    target = ctx["target"]
    if target.name != "onnx" or result.precision != "int8":
        raise UserInputError(f"--isolate needs an INT8 ONNX artifact (model_int8.onnx); {path.name} is "
                             f"{target.name}/{result.precision}")
    import onnx

    from ..bench.evaluate import runner_logits
    from ..quant.accuracy_aware import ONNX_QDQ

    from ..targets.onnx import export_for_calibration

    model = onnx.load(str(path))
    layers = ONNX_QDQ.layers(model)
    with progress.step("Re-exporting the FP32 graph INT8 was calibrated from (float weights and biases)"):
        # Calibration also corrects biases for quantization error: a layer back in float takes its
        # weights and bias from this graph, as in the accuracy-aware search (node names match).
        original = export_for_calibration(ctx["model"], ctx["size"], dynamic_batch=ctx["dynamic_batch"])
    groups = {t: g for t, g in group_layers(model.graph, layers, ctx["taps"], ctx["tap_map"]).items() if g}
    x, reference = ctx["x"], ctx["logits"]
    ranking = []
    with tempfile.TemporaryDirectory(prefix="rmt-isolate-") as tmp, \
            progress.bar(f"Isolating INT8 error per {opts.level} ({len(groups)} groups)", len(groups)) as advance:
        for tap, own in groups.items():
            candidate = ONNX_QDQ.clone(model)
            keep = set(own)
            ONNX_QDQ.revert(candidate, [name for name in layers if name not in keep], original)
            file = Path(tmp) / "isolated.onnx"
            onnx.save(candidate, str(file))
            with target.load(file, opts.threads) as runner:
                logits = runner_logits(runner, x, False, None)
            error = tap_error("logits", reference, logits)
            ranking.append({"tap": tap, "rel_l2": error.rel_l2, "cosine": error.cosine, "layers": len(own)})
            advance(1)
    for entry in ranking:
        tap = next((t for t in result.taps if t.name == entry["tap"]), None)
        if tap is not None:
            tap.isolated_rel_l2, tap.isolated_layers = entry["rel_l2"], entry["layers"]
    return sorted(ranking, key=lambda e: -(e["rel_l2"] if e["rel_l2"] is not None else np.inf))
