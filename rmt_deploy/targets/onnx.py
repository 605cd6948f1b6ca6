"""ONNX target: the standard ONNX file (written by ``onnx_export``), what is in it, and the ONNX Runtime
runner every ONNX file is checked and timed with."""
from __future__ import annotations

import copy
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..cpu import restricted_threads
from ..optional import require
from .base import Exported, ExportRequest, Sources, Target
from .formats import read_onnx_model
from .onnx_export import format_of, save
from .runner import Runner

__all__ = ["TARGET", "OnnxTarget", "describe", "inspect_graph", "render_graph", "OnnxRuntimeRunner", "FORBIDDEN_OPS"]

# Ops that would mean shape arithmetic or table generation survived in the graph (docs/design.md, "The deploy form").
FORBIDDEN_OPS = {"Range", "Shape", "ConstantOfShape", "Cast", "Expand", "NonZero", "Loop", "If",
                 "Gather", "ScatterND", "Unsqueeze", "Squeeze"}


# Execution providers that run models locally, fastest first, with the device they use;
# others (e.g. Azure) are skipped.
_COMPUTE_PROVIDERS = {"TensorrtExecutionProvider": "gpu", "CUDAExecutionProvider": "gpu",
                      "OpenVINOExecutionProvider": "cpu", "CoreMLExecutionProvider": "ane/gpu/cpu",
                      "DmlExecutionProvider": "gpu", "CPUExecutionProvider": "cpu"}


def describe(path: Path) -> dict:
    """What a runner needs to feed an artifact: input name/shape, batch dimension, metadata."""
    proto = read_onnx_model(Path(path))
    value = proto.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    return {"input_name": value.name, "input_shape": dims,  # None for symbolic dims
            "dynamic_batch": dims[0] is None, "metadata": {p.key: p.value for p in proto.metadata_props}}


def inspect_graph(path: Path) -> dict:
    """Structure facts the deploy form promises: node count, op histogram, forbidden ops, max rank."""
    import onnx

    proto = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(proto)
    ops = Counter(n.op_type for n in proto.graph.node)
    ranks = [len(v.type.tensor_type.shape.dim) for v in
             list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")]
    ranks += [len(t.dims) for t in proto.graph.initializer]
    attention = _attention_chains(proto)
    return {
        "nodes": sum(ops.values()),
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "forbidden_ops": sorted(set(ops) & FORBIDDEN_OPS),
        "max_rank": max(ranks) if ranks else 0,
        "attention_chains": attention,
        "fused_attention": ops.get("Attention", 0),
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
    }


def _attention_chains(proto) -> int:
    """Count MatMul → Add → Softmax → MatMul chains (what quantizers and TensorRT look for)."""
    users: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def next_ops(node, op):
        return [u for out in node.output for u in users.get(out, []) if u.op_type == op]

    count = 0
    for node in proto.graph.node:
        if node.op_type != "MatMul":
            continue
        for add in next_ops(node, "Add"):
            for softmax in next_ops(add, "Softmax"):
                count += len(next_ops(softmax, "MatMul"))
    return count


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime session; spinning disabled so two sessions can be timed in one process.

    ``fuse_int8=False`` keeps ONNX Runtime from fusing Q/DQ pairs into int8 kernels (basic graph
    optimizations only): the graph then computes its Q/DQ arithmetic in float, the same on every
    CPU — how a graph meant for another runtime (TensorRT) is checked here.

    ``memory_pattern=False`` (the export's value checks) skips the planned block ONNX Runtime allocates
    from a shape's second run: the same values, RMT-T at 800x1344 in 637 MiB, not 992 (docs/backbones.md).
    """

    def __init__(self, path: Path, threads: int | None = None, provider: str = "CPUExecutionProvider",
                 fuse_int8: bool = True, memory_pattern: bool = True) -> None:
        super().__init__()
        self.path, self.threads, self.provider, self.fuse_int8 = Path(path), threads, provider, fuse_int8
        self.memory_pattern, self.name = memory_pattern, f"onnxruntime {provider}"
        self.device = _COMPUTE_PROVIDERS.get(provider, "cpu")
        self.session = None

    def activate_impl(self) -> None:
        ort = require("onnxruntime", None)
        options = ort.SessionOptions()
        threads = self.threads or restricted_threads()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.log_severity_level = 3
        options.enable_mem_pattern = self.memory_pattern
        if not self.fuse_int8:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.session = ort.InferenceSession(self._model_source(), options, providers=[self.provider])

    def _model_source(self):
        return str(self.path)

    def deactivate_impl(self) -> None:
        self.session = None

    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        start = time.perf_counter()
        outputs = self.session.run(names, feeds)
        self.last_inference_s = time.perf_counter() - start
        return dict(zip(names, outputs))


class OnnxTapsRunner(OnnxRuntimeRunner):
    """ONNX Runtime on an in-memory copy of the artifact with ``tensors`` added as graph outputs.

    A tensor that is a graph output cannot be fused away, so ONNX Runtime may fuse a little less
    than on the shipped file; the values at the taps are the ones the artifact computes.
    """

    def __init__(self, path: Path, tensors: list[str], threads: int | None = None) -> None:
        super().__init__(path, threads)
        self.tensors, self.name = list(tensors), "onnxruntime CPUExecutionProvider (tapped copy)"

    def _model_source(self):
        import onnx

        proto = onnx.load(str(self.path))
        have = {o.name for o in proto.graph.output}
        produced = {o for n in proto.graph.node for o in n.output}
        missing = [t for t in self.tensors if t not in produced]
        if missing:
            raise ValueError(f"{self.path.name} has no tensor {missing[0]!r}")
        proto.graph.output.extend(onnx.ValueInfoProto(name=t) for t in self.tensors if t not in have)
        return proto.SerializeToString()


def render_graph(entry: dict) -> list[str]:
    graph = entry["graph"]
    ops = f"needs {entry['requires']}" if entry.get("requires") else "standard ai.onnx ops"
    return [f"- file `{entry['path'] or 'removed'}`, {ops}, opset {graph['opset']}, {graph['nodes']} nodes, "
            f"max tensor rank {graph['max_rank']}, {graph['attention_chains']} MatMul→Add→Softmax→MatMul chains"
            + (f", {graph['fused_attention']} fused Attention ops" if graph.get("fused_attention") else "")]


class OnnxTarget(Target):
    """Standard ONNX: ``ai.onnx`` ops only at opset ``OPSET`` (the generic encoding), read by ONNX
    Runtime, OpenVINO, TensorRT, onnx2tf and NPU compilers alike. ``onnxruntime.OnnxRuntimeTarget``
    is the same file type in ONNX Runtime's own encoding."""

    name, title, aliases, suffix = "onnx", "ONNX", (), ".onnx"
    summary = "standard"
    isolates_int8, checked_by = True, "onnxruntime CPU"
    precisions = ("fp32", "int8", "fp16")
    always_fp32 = calibrated_int8 = True
    dynamic_size = True
    encoding = "generic"  # rewrite.ENCODINGS: what the FP32 and INT8 graphs are exported in

    def unavailable_reason(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return f"onnxruntime is not installed ({e})"
        return None

    def runtimes(self, device: str | None = None) -> list[str]:
        """ONNX Runtime execution providers usable on this machine, for benchmarking each."""
        available = set(require("onnxruntime", None).get_available_providers())
        return [p for p in _COMPUTE_PROVIDERS if p in available]

    def no_runtime_reason(self) -> str:
        return "no ONNX Runtime execution provider is available"

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        import onnx

        precision, dynamic, fields = request.precision, request.dynamic_batch, {}
        if precision == "int8":
            int8 = sources.int8_onnx(self.encoding)
            request.metadata.update(int8.metadata)
            fields["quantization"] = int8.quantization
            proto = copy.deepcopy(int8.model)
        else:
            # FP16 is written in the generic ops, which every execution provider runs in half precision.
            source = sources.fp16_onnx(dynamic) if precision == "fp16" else sources.deploy_onnx(dynamic, self.encoding)
            proto = onnx.load(str(source))
        facts = format_of(proto)
        fields.update(facts)
        request.metadata.update({key: str(value) for key, value in facts.items()})
        with sources.progress.step(f"Writing {request.path.name} ({'dynamic' if dynamic else 'fixed'} batch)"):
            save(proto, request.path, request.metadata)
        return Exported(request.path, fields)

    def inspect(self, path: Path) -> dict:
        return inspect_graph(path)

    def machine_facts(self) -> dict:
        try:
            import onnxruntime
        except ImportError:
            return {"onnxruntime_providers": []}
        return {"onnxruntime_providers": onnxruntime.get_available_providers()}

    def int8_weight_grid(self, path: Path) -> dict:
        import onnx

        from ..quant.checks import weight_grid

        return weight_grid(onnx.load(str(path)))

    def describe(self, path: Path) -> dict:
        return describe(path)

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(path, threads, runtime or "CPUExecutionProvider")

    def check_runner(self, path: Path, threads: int | None = None) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(path, threads, memory_pattern=False)

    def load_taps(self, path: Path, tensors: list[str], threads: int | None = None) -> OnnxTapsRunner:
        return OnnxTapsRunner(path, tensors, threads)

    def revertible(self, path: Path, sources: Sources):
        import onnx

        from ..quant.accuracy_aware import ONNX_QDQ

        return onnx.load(str(path)), sources.int8_onnx(self.encoding).float_model, ONNX_QDQ

    def save_model(self, model, path: Path, metadata: dict[str, str]) -> Path:
        return save(copy.deepcopy(model), path, metadata)

    def render(self, entry: dict) -> list[str]:
        return render_graph(entry) if entry.get("graph") else []


TARGET = OnnxTarget()
