"""`rmt-deploy compare --isolate`: each block's (or op-group's) own INT8 error.

The artifact is run with only one tap's layers quantized at a time — every other quantized layer
reverted to float with the accuracy-aware search's machinery (``quant.accuracy_aware.Reverter``:
ONNX Q/DQ or OpenVINO FakeQuantize, and the FP32 graph calibration started from, re-exported
here) — and its logits compared with PyTorch's. The error then comes from that tap's layers
alone, not from everything before them. A tap's layers are the quantized Conv/Gemm/MatMul ops
after the previous tap's tensor up to its own (at op-group level, the block's position conv
counts with ``norm1``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..bench.taps import CompareResult, tap_error
from ..errors import UserInputError
from ..targets import ONNX_FILES

__all__ = ["isolate", "group_layers", "onnx_ops"]


def onnx_ops(graph) -> list[tuple[str, list[str]]]:
    return [(n.name, list(n.output)) for n in graph.node]


def _openvino_ops(model) -> list[tuple[str, list[str]]]:
    return [(op.get_friendly_name(), [n for out in op.outputs() for n in out.get_names()])
            for op in model.get_ordered_ops()]


def group_layers(ops: list[tuple[str, list[str]]], layers: list[str], taps: list[str],
                 tap_map: dict[str, str]) -> dict[str, list[str]]:
    """tap → the quantized layers between the previous tap and it; ``ops`` are (name, output
    tensor names) in topological order."""
    index = {name: i for i, (name, _) in enumerate(ops)}
    producer = {o: i for i, (_, outputs) in enumerate(ops) for o in outputs}
    bounds = [(producer[tap_map[t]], t) for t in taps if t in tap_map and tap_map[t] in producer]
    groups: dict[str, list[str]] = {t: [] for _, t in bounds}
    for layer in layers:
        owner = next((t for bound, t in bounds if index[layer] <= bound), None)
        if owner is not None:
            groups[owner].append(layer)
    return groups


def _backend(path: Path, ctx: dict, tmp: Path):
    """(INT8 model, its FP32 source, reverter, ordered ops, save(model, folder) -> path) per target."""
    from ..targets.onnx_export import encoding_of, export, export_for_calibration

    model, size, dynamic = ctx["model"], ctx["size"], ctx["dynamic_batch"]
    if ctx["target"].name in ONNX_FILES:
        import onnx

        from ..quant.accuracy_aware import ONNX_QDQ

        int8 = onnx.load(str(path))
        original = export_for_calibration(model, size, dynamic_batch=dynamic, encoding=encoding_of(int8))
        return int8, original, ONNX_QDQ, onnx_ops(int8.graph), lambda m: _onnx_save(onnx, m, tmp)
    from ..quant.openvino_int8 import OPENVINO_FQ
    from ..rewrite import to_deploy
    from ..targets import openvino

    int8 = openvino.read_model(path)
    original = openvino.convert(export(to_deploy(model, size), tmp / "deploy.onnx", size, dynamic_batch=dynamic,
                                       metadata={}))
    # Candidates compile as the artifact does (its recorded compile_config, e.g. f32 float layers).
    kept = {k: v for k, v in openvino.describe(path)["metadata"].items() if k in ("precision", "compile_config")}
    return int8, original, OPENVINO_FQ, _openvino_ops(int8), \
        lambda m: openvino.save(m, tmp / "isolated.xml", {"precision": "int8", **kept})


def _onnx_save(onnx, model, tmp: Path) -> Path:
    onnx.save(model, str(tmp / "isolated.onnx"))
    return tmp / "isolated.onnx"


def isolate(path: Path, result: CompareResult, ctx: dict, opts, progress) -> list[dict]:
    """The ``--isolate`` ranking, worst first; also fills ``isolated_rel_l2`` on the result's taps."""
    target = ctx["target"]
    if not target.isolates_int8 or result.precision != "int8":
        raise UserInputError(f"--isolate needs an INT8 ONNX or OpenVINO artifact; {path.name} is "
                             f"{target.name}/{result.precision}")
    from ..bench.evaluate import runner_logits

    x, reference = ctx["x"], ctx["logits"]
    ranking = []
    with tempfile.TemporaryDirectory(prefix="rmt-isolate-") as tmp:
        with progress.step("Re-exporting the FP32 graph INT8 was calibrated from (float weights and biases)"):
            # Calibration also corrects biases for quantization error: a layer back in float takes
            # its weights and bias from this graph, as in the accuracy-aware search (names match).
            int8, original, reverter, ops, save = _backend(path, ctx, Path(tmp))
        layers = reverter.layers(int8)
        groups = {t: g for t, g in group_layers(ops, layers, ctx["taps"], ctx["tap_map"]).items() if g}
        def error_with(own: list[str]):
            candidate = reverter.clone(int8)
            reverter.revert(candidate, [name for name in layers if name not in set(own)], original)
            with target.load(save(candidate), opts.threads) as runner:
                return tap_error("logits", reference, runner_logits(runner, x, False, None))

        with progress.bar(f"Isolating INT8 error per {opts.level} ({len(groups)} groups)", len(groups) + 1) as advance:
            result.isolate_float = error_with([]).rel_l2  # every layer in float: this runtime's own floor
            advance(1)
            for tap, own in groups.items():
                error = error_with(own)
                ranking.append({"tap": tap, "rel_l2": error.rel_l2, "cosine": error.cosine, "layers": len(own)})
                advance(1)
    for entry in ranking:
        tap = next((t for t in result.taps if t.name == entry["tap"]), None)
        if tap is not None:
            tap.isolated_rel_l2, tap.isolated_layers = entry["rel_l2"], entry["layers"]
    return sorted(ranking, key=lambda e: -(e["rel_l2"] if e["rel_l2"] is not None else np.inf))
