"""Whether an INT8 artifact computes correctly on this CPU (see ``rmt_deploy.cpu``).

rmt-deploy's CPU-bound INT8 artifacts use 7-bit weights and are exact everywhere. A graph with
full 8-bit weights (an artifact from rmt-deploy 0.1, a TensorRT-bound Q/DQ graph, someone
else's INT8 model) saturates in ONNX Runtime's and OpenVINO's int8 kernels on x86 without
VNNI/AMX: its latency there is real, its outputs are not.
"""
from __future__ import annotations

from pathlib import Path

from ..cpu import CpuFeatures, cpu_features
from ..targets import Target, resolve_target

__all__ = ["int8_cpu_warning"]


def int8_cpu_warning(path: Path, target: Target | str, features: CpuFeatures | None = None,
                     metadata: dict | None = None) -> str | None:
    """One line for the user when ``path`` would compute wrong int8 results on this CPU, else None:
    a CPU feature the artifact's metadata names (``wrong_on_isa``), or x86 int16 saturation."""
    features = features or cpu_features()
    target = resolve_target(target) if isinstance(target, str) else target
    if metadata is None:
        metadata = target.describe(path).get("metadata") or {}
    named = [isa for isa in str(metadata.get("wrong_on_isa", "")).split(",") if isa and isa in features.isa]
    if named:
        return (f"{Path(path).name}: this CPU has {', '.join(named)}: {metadata.get('wrong_on', 'outputs differ')}; "
                "its outputs here are wrong, timings are real")
    if not features.int8_saturates:
        return None
    grid = target.int8_weight_grid(path)  # None: not run by a CPU's int8 kernels
    layers = grid["saturating_layers"] if grid else None
    if not layers:
        return None
    return (f"{Path(path).name}: {len(layers)} int8 layers use full 8-bit weights, which this CPU (x86 without "
            "VNNI/AMX) saturates: outputs here are wrong, timings are real; re-export with rmt-deploy >= 0.2 "
            "(7-bit weights, exact on every CPU)")
