"""The deploy form as ONNX: the exporter every ONNX-reading target shares (the ONNX and ONNX Runtime
targets, TensorRT's ready ONNX, OpenVINO's and MNN's sources, INT8 calibration), and how a written
graph says which encoding and opset it needs."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path
from ..quiet import quiet
from ..sizes import SizeRange
from .onnx_opset import lower_opset

__all__ = ["export", "export_fp16", "export_for_calibration", "output_names", "encoding_of", "save", "format_of",
           "INPUT_NAME", "OUTPUT_NAME", "OPSET", "FOLD_LIMIT", "FUSED_REQUIRES"]

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
