"""ONNX target: deploy-form model → simplified ONNX with metadata; ONNX Runtime runner."""
from __future__ import annotations

import copy
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..cpu import restricted_threads
from ..optional import require
from ..quiet import quiet
from ..sizes import SizeRange
from .base import Exported, ExportRequest, Sources, Target
from .formats import read_onnx_model
from .onnx_opset import lower_opset
from .runner import Runner

__all__ = ["TARGET", "OnnxTarget", "export", "output_names", "FOLD_LIMIT", "export_fp16", "export_for_calibration",
           "encoding_of", "save", "describe", "inspect_graph", "render_graph", "OnnxRuntimeRunner", "INPUT_NAME",
           "OUTPUT_NAME", "OPSET", "FORBIDDEN_OPS", "FUSED_REQUIRES", "format_of"]

INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Standard ONNX (the generic encoding) is written at opset 17, the lowest with LayerNormalization; the
# exporter writes 18 (its lowest) and ``onnx_opset.lower_opset`` rewrites the two ops that differ.
OPSET, _EXPORTER_OPSET = 17, 18
# Constants onnxslim may compute at export time are kept in the file only up to this size: the
# whole-attention decay built from per-axis tables (rewrite.deploy) stays an Add → Reshape when
# folding it would store a large table (564 MB for RMT-T at 800x1344); small ones fold as before.
FOLD_LIMIT = 4 << 20
# What the ONNX Runtime encoding (rewrite.fused; the onnxruntime target's files) needs: ONNX Runtime 1.22
# refuses opset 23; 1.23, 1.24 and 1.31 run it (checked here). Recorded in the artifact and the report.
FUSED_REQUIRES = "onnxruntime>=1.23 (opset 23 Attention, com.microsoft.RotaryEmbedding)"
# Ops that would mean shape arithmetic or table generation survived in the graph (DESIGN §3).
FORBIDDEN_OPS = {"Range", "Shape", "ConstantOfShape", "Cast", "Expand", "NonZero", "Loop", "If",
                 "Gather", "ScatterND", "Unsqueeze", "Squeeze"}


# Execution providers that run models locally, fastest first, with the device they use;
# others (e.g. Azure) are skipped.
_COMPUTE_PROVIDERS = {"TensorrtExecutionProvider": "gpu", "CUDAExecutionProvider": "gpu",
                      "OpenVINOExecutionProvider": "cpu", "CoreMLExecutionProvider": "ane/gpu/cpu",
                      "DmlExecutionProvider": "gpu", "CPUExecutionProvider": "cpu"}


def export(model, path: Path, input_size: tuple[int, int], *, dynamic_batch: bool,
           metadata: dict[str, str], size_range: SizeRange | None = None) -> Path:
    """Export ``model`` (the deploy form) to ``path`` as one self-contained ONNX file.

    The graph is simplified with onnxslim, then ``metadata`` is stored as metadata_props. A model in
    the ONNX Runtime encoding (``rewrite.fused``) is written at opset 23 and keeps its linear layers
    as MatMul on 4-D tokens: onnxslim's 2-D Gemm would add a Reshape pair (a copy) around each,
    measured ~6% of RMT-T's time. With ``size_range`` (a dynamic deploy form) height and width are
    dynamic too, each a multiple of 32 within the range; the batch is then dynamic as well.
    """
    import onnx
    import onnxslim
    import torch

    from ..rewrite import fused
    from ..rewrite.taps import TAPS_KEY, all_taps, encode_taps, scope_outputs

    onnxruntime_ops = getattr(model, "encoding", "generic") == "onnxruntime"

    # A dynamic batch needs an example batch > 1: torch.export specialises sizes 0 and 1.
    dynamic_batch = dynamic_batch or size_range is not None
    example = torch.zeros(2 if dynamic_batch else 1, 3, *input_size)
    dynamic_shapes = {"x": _dynamic_dims(size_range)} if dynamic_batch else None
    raw = path.with_suffix(".raw.onnx")
    with _quiet_exporter():
        torch.onnx.export(model, (example,), str(raw), dynamo=True,
                          opset_version=fused.OPSET if onnxruntime_ops else _EXPORTER_OPSET,
                          input_names=[INPUT_NAME], output_names=list(output_names(model)),
                          dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
    proto = onnx.load(str(raw))
    raw.unlink()
    taps = all_taps(model.cfg) if hasattr(model, "cfg") else ()
    found = scope_outputs(_graph_ops(proto), [o.name for o in proto.graph.output], taps)
    with _quiet_exporter():
        proto = onnxslim.slim(proto, size_threshold=FOLD_LIMIT,
                              skip_fusion_patterns=["FusionGemm"] if onnxruntime_ops else None)
    if not onnxruntime_ops:
        lower_opset(proto, OPSET)
    present = {o for n in proto.graph.node for o in n.output}
    metadata = {**metadata, TAPS_KEY: encode_taps(found, present)}
    if dynamic_batch:
        for value in list(proto.graph.input) + list(proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    if size_range is not None:
        for i, name in ((2, "height"), (3, "width")):
            proto.graph.input[0].type.tensor_type.shape.dim[i].dim_param = name
    return save(proto, path, metadata)


def _dynamic_dims(size_range: SizeRange | None) -> dict:
    """torch.export dimensions of the input: the batch, and height and width as multiples of 32."""
    import torch

    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    if size_range is not None:
        for axis, name in ((2, "height"), (3, "width")):
            dims[axis] = 32 * torch.export.Dim(f"{name}_32", min=size_range.low // 32, max=size_range.high // 32)
    return dims


def output_names(model) -> tuple[str, ...]:
    """The graph outputs a deploy-form module declares (``logits``; ``feat0`` … for backbones)."""
    return tuple(getattr(model, "output_names", (OUTPUT_NAME,)))


def export_fp16(model, path: Path, input_size: tuple[int, int], *, dynamic_batch: bool,
                metadata: dict[str, str], size_range: SizeRange | None = None) -> Path:
    """Like ``export``, in FP16 with FP32 inputs and outputs (see rmt_deploy.quant.fp16)."""
    import onnx

    from ..quant.fp16 import to_fp16
    from ..rewrite.taps import TAPS_KEY

    fp32 = path.with_suffix(".fp32.onnx")
    export(model, fp32, input_size, dynamic_batch=dynamic_batch, metadata=metadata, size_range=size_range)
    try:
        fp32_proto = onnx.load(str(fp32))
        taps = {p.key: p.value for p in fp32_proto.metadata_props if p.key == TAPS_KEY}
        proto = to_fp16(fp32_proto)
    finally:
        fp32.unlink()
    return save(proto, path, {**taps, **metadata})  # the FP32 graph's tap map: same tensor names


def export_for_calibration(model, input_size: tuple[int, int], *, dynamic_batch: bool, encoding: str = "generic",
                           size_range: SizeRange | None = None):
    """The reference ``model`` as the FP32 graph INT8 calibration takes (``quant.int8``): deploy form with the
    FFN as linear layers on tokens, as an onnx.ModelProto. ``encoding`` "onnxruntime" for the ONNX Runtime
    INT8 artifact (its attention stays float either way), "generic" for the Q/DQ graph TensorRT takes."""
    import tempfile

    import onnx

    from ..rewrite import to_deploy

    deploy = to_deploy(model, input_size, ffn_layout="linear", encoding=encoding, dynamic=size_range is not None,
                       largest=size_range.largest if size_range else None)
    with tempfile.TemporaryDirectory(prefix="rmt-int8-") as tmp:
        path = export(deploy, Path(tmp) / "fp32_tokens.onnx", input_size, dynamic_batch=dynamic_batch, metadata={},
                      size_range=size_range)
        return onnx.load(str(path))


def encoding_of(proto) -> str:
    """The deploy-form encoding an ONNX graph was exported in (``rewrite.ENCODINGS``)."""
    fused = any(n.op_type in ("Attention", "RotaryEmbedding") for n in proto.graph.node)
    return "onnxruntime" if fused else "generic"


def save(proto, path: Path, metadata: dict[str, str]) -> Path:
    """Check ``proto``, replace its metadata_props with ``metadata`` and write one self-contained file.

    The tap map the export recorded (``rewrite.taps.TAPS_KEY``) is kept unless ``metadata`` sets it:
    the graphs built from an export (FP16, INT8) keep its tensor names.
    """
    import onnx

    from ..rewrite.taps import TAPS_KEY

    kept = {p.key: p.value for p in proto.metadata_props if p.key == TAPS_KEY}
    del proto.metadata_props[:]
    for key, value in {**kept, **metadata}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "rmt-deploy"
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def _graph_ops(proto) -> list:
    """The nodes of a dynamo export with the module path each came from (its name_scopes metadata)."""
    import ast

    from ..rewrite.taps import GraphOp

    ops = []
    for node in proto.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
        names = ast.literal_eval(scopes)
        ops.append(GraphOp(names[-2] if len(names) >= 2 else "", node.op_type, tuple(node.input), tuple(node.output)))
    return ops


def _quiet_exporter():
    """The dynamo exporter and onnxslim print progress and warnings; keep the CLI readable."""
    return quiet("torch.onnx", "torch._dynamo", "torch.export", "torch.fx", "onnxscript", "onnx_ir", "torch._export")


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


def format_of(proto) -> dict:
    """What an ONNX graph needs from its reader: the deploy-form encoding, the ai.onnx opset, the
    op domains, and for the ONNX Runtime encoding the runtime version (report fields and metadata)."""
    encoding = encoding_of(proto)
    domains = ",".join(sorted({"ai.onnx" if n.domain in ("", "ai.onnx") else n.domain for n in proto.graph.node}))
    facts = {"encoding": encoding, "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
             "domains": domains}
    if encoding == "onnxruntime":
        facts["requires"] = FUSED_REQUIRES
    return facts


TARGET = OnnxTarget()
