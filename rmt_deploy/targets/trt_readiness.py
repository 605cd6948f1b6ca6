"""Will TensorRT take this ONNX? A readiness check that needs no GPU, plus a TensorRT-RTX proxy.

``readiness`` applies the documented rules of TensorRT 10/11's ONNX parser: supported ops,
explicit-quantization Q/DQ (int8, zero point 0, per-channel weight axes, per-tensor
activations), supported dtypes, and static dims except a batch axis covered by a profile.
``rtx_build`` parses and builds with TensorRT-RTX where it is installed (its parser and builder
run without a GPU): a real parse and build, but of a sibling product, so it is reported as a proxy.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..optional import install_hint

__all__ = ["readiness", "rtx_build", "with_trial_build", "render_readiness", "profile_shapes", "TRT_ONNX_OPS",
           "TARGET_VERSIONS"]

TARGET_VERSIONS = "TensorRT 10.x / 11.x"
OPSET_RANGE = (9, 22)  # opsets TensorRT 10.x's parser accepts

# Default-domain ops TensorRT 10's ONNX parser implements (onnx-tensorrt's operator matrix).
# Ops missing here (QLinearConv, MatMulInteger, ConvInteger, DynamicQuantizeLinear, the
# Sequence* family, string ops, ...) and every non-default domain (com.microsoft) are refused.
TRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
HardSigmoid HardSwish Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mish Mod Mul
Neg NonMaxSuppression NonZero Not OneHot Or Pad PRelu Pow QuantizeLinear RandomNormal RandomNormalLike
RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign
Round Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose
Trilu Unsqueeze Upsample Where Xor
""".split())

# ONNX TensorProto dtypes TensorRT handles (FLOAT, UINT8, INT8, INT32, INT64, BOOL, FLOAT16,
# DOUBLE cast down, BFLOAT16, FP8 E4M3, INT4).
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
           11: "double", 16: "bfloat16", 17: "float8e4m3", 22: "int4"}


def profile_shapes(input_shape: list, metadata: dict[str, str], batch: tuple[int, int, int] = (1, 1, 32)
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) input shapes of the optimisation profile, or None for a static input.

    The batch axis, when dynamic, runs over ``batch``; height and width, when dynamic (``--dynamic``),
    over the range in the artifact's metadata (``dynamic_size`` "lo-hi"), optimised for the verified
    ``input_size``."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in input_shape]
    if all(d is not None for d in dims):
        return None
    shapes = [list(dims), list(dims), list(dims)]
    if dims[0] is None:
        for shape, b in zip(shapes, batch):
            shape[0] = b
    if any(d is None for d in dims[2:]):
        if not metadata.get("dynamic_size"):
            return None  # a dynamic side without a recorded range: readiness reports it
        low, high = (int(v) for v in metadata["dynamic_size"].split("-"))
        opt = [int(v) for v in metadata["input_size"].split("x")]
        for shape, sides in zip(shapes, ([low, low], opt, [high, high])):
            shape[2:] = sides
    return tuple(tuple(s) for s in shapes)


def readiness(model, dynamic_batch: bool = False) -> dict:
    """Problems TensorRT would hit with ``model`` (an onnx.ModelProto); empty list: ready."""
    from ..quant.checks import tensorrt_problems

    graph = model.graph
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset} is outside what {TARGET_VERSIONS} parse ({OPSET_RANGE[0]}–{OPSET_RANGE[1]})")
    unsupported = sorted({f"{n.domain + '::' if n.domain not in ('', 'ai.onnx') else ''}{n.op_type}"
                          for n in graph.node
                          if n.domain not in ("", "ai.onnx") or n.op_type not in TRT_ONNX_OPS})
    if unsupported:
        problems.append(f"ops TensorRT's ONNX parser does not implement: {', '.join(unsupported)}")
    bad_types = sorted({f"{t.name} ({t.data_type})" for t in graph.initializer if t.data_type not in _DTYPES})
    bad_types += sorted({f"{v.name} ({v.type.tensor_type.elem_type})" for v in [*graph.input, *graph.output]
                         if v.type.tensor_type.elem_type not in _DTYPES})
    if bad_types:
        problems.append(f"tensors of types TensorRT does not support: {', '.join(bad_types[:5])}")
    metadata = {p.key: p.value for p in model.metadata_props}
    problems += _shape_problems(graph, dynamic_batch, bool(metadata.get("dynamic_size")))
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    if quantized:
        problems += tensorrt_problems(model)
    return {"status": "ready" if not problems else "problems", "problems": problems, "checked_for": TARGET_VERSIONS,
            "opset": opset, "explicit_quantization": quantized,
            "profile": _profile(graph, metadata) if dynamic_batch else None}


def _shape_problems(graph, dynamic_batch: bool, dynamic_size: bool) -> list[str]:
    problems = []
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if (axis == 0 and dynamic_batch) or (axis in (2, 3) and dynamic_size):
                continue  # covered by the optimisation profile written with the engine
            problems.append(f"input {value.name} axis {axis} is dynamic ({dim.dim_param or '?'}); only the batch "
                            "axis may be, with an optimisation profile (and height and width with --dynamic)")
    return problems


def _profile(graph, metadata: dict[str, str]) -> dict | None:
    value = graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    shapes = profile_shapes(dims, metadata)
    return None if shapes is None else {"input": value.name, **dict(zip(("min", "opt", "max"), map(list, shapes)))}


def rtx_build(path: Path) -> dict | None:
    """Parse and build ``path`` with TensorRT-RTX if installed (None otherwise). No GPU needed."""
    try:
        import tensorrt_rtx as trt
    except ImportError:
        return None
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)  # keep network and parser referenced until done
    parsed = parser.parse_from_file(str(path))
    errors = [parser.get_error(i).desc().splitlines()[0] for i in range(parser.num_errors)]
    built = None
    if parsed:
        config = builder.create_builder_config()
        shapes = profile_shapes(list(network.get_input(0).shape), _metadata(path))
        if shapes is not None:
            profile = builder.create_optimization_profile()
            profile.set_shape(network.get_input(0).name, *shapes)
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        built = plan is not None and plan.nbytes > 0
    return {"proxy": f"TensorRT-RTX {trt.__version__} (not TensorRT itself)", "parsed": bool(parsed),
            "built": built, "layers": network.num_layers if parsed else None, "errors": errors[:5],
            "seconds": round(time.perf_counter() - start, 2),
            "status": "ok" if parsed and built else "failed"}


def with_trial_build(ready: dict, build: dict | None) -> dict:
    """``readiness``'s verdict with the TensorRT-RTX trial build in it: a file its ONNX parser (the
    same parser as TensorRT's) rejects, or that does not build, is not ready."""
    problems = list(ready["problems"])
    if build is not None and not build["parsed"]:
        problems.append(f"{build['proxy']} cannot parse it: {'; '.join(build['errors']) or 'no reason given'}")
    elif build is not None and not build["built"]:
        problems.append(f"{build['proxy']} parses it but builds no engine")
    return {**ready, "status": "ready" if not problems else "problems", "problems": problems, "rtx_build": build}


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def render_readiness(entry: dict, build_script: str) -> list[str]:
    """report.md lines of a TensorRT artifact: readiness, the RTX trial build, the device's build command."""
    ready = entry.get("readiness")
    if not ready:
        return []
    lines = [f"### {entry['target']} / {entry['precision']} readiness", "",
             f"- `{entry['onnx']}` is **{ready['status']}** for {ready['checked_for']}"
             + (f": {'; '.join(ready['problems'])}" if ready["problems"] else "")
             + (" (explicit quantization: Q/DQ)" if ready["explicit_quantization"] else "")]
    rtx = ready.get("rtx_build")
    lines.append(f"- parse + build with {rtx['proxy']}: {rtx['status']} ({rtx['layers']} layers, {rtx['seconds']} s)"
                 + (f" — {'; '.join(rtx['errors'])}" if rtx["errors"] else "") if rtx else
                 f"- TensorRT-RTX not installed: no parse/build proxy ({install_hint('trt-check')})")
    if entry.get("onnx_parity"):
        lines.append(f"- the same ONNX in ONNX Runtime vs PyTorch: cosine {entry['onnx_parity']['cosine']:.6f}")
    if entry.get("trtexec"):
        lines.append(f"- on the device: `{' '.join(entry['trtexec'])}` (all in `{build_script}`)")
    return lines + [""]
