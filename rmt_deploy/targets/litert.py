"""LiteRT target (the former TensorFlow Lite, Android's own runtime): the deploy form as
``model.tflite`` (FP32), ``model_fp16.tflite`` (FP16 weights) and ``model_int8.tflite`` (INT8 conv and
linear layers), converted by litert-torch and verified by LiteRT's interpreter on this machine.

- **Which deploy form.** The ExecuTorch encoding (``rewrite.xnnpack``): LiteRT's CPU path is the
  same XNNPACK library, and that encoding is written so XNNPACK takes every op. From the generic
  encoding, LiteRT's own kernels keep the BROADCAST_TO ops of the rotary tables and the demo runs
  2.2× slower. The report records which ops XNNPACK took (``delegation``).
- **FP16** casts the FP32 file's weights to float16 with ai-edge-quantizer. LiteRT dequantizes them
  when it loads the file, so layers compute in FP32 as verified.
- **INT8** is PT2E with litert-torch's own quantizer, limited to our policy (``quant.pt2e``: conv and
  linear inputs, per-channel weights in [-127, 127], outputs), calibrated on the export's images, with
  the accuracy-aware search's per-layer float fallback (``pt2e_int8``). Where the first or last layer
  is int8, the file's input or output is int8 too; the runner (de)quantizes with the tensor's own
  scale and zero point, as an app does.
- **Metadata**: the artifact's metadata as JSON in the model's metadata table under ``META_KEY``,
  written and read with the flatbuffer code ``ai-edge-litert`` ships (no TensorFlow).
- **Fixed size, batch 1**: litert-torch 0.10 cannot trace a dynamic height and width of this graph,
  so ``--dynamic`` and ``--dynamic-batch`` are refused before any work.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..cpu import usable_cores
from ..errors import BackendUnavailable, UserInputError
from ..optional import install_hint
from ..quant.pt2e import EXACT_ON, convert, max_abs_weight, policy_quantizer
from ..quiet import native_quiet, quiet
from .base import ExportRequest, Exported, Package, Sources
from .formats import check_tflite
from .pt2e_int8 import INPUT_NAME, Int8Candidate, PT2ETarget
from .runner import Runner

__all__ = ["TARGET", "LiteRTTarget", "LiteRTRunner", "META_KEY", "convert_module", "with_metadata",
           "read_metadata", "fp16_weights", "describe", "delegation"]

META_KEY = "rmt_deploy"  # the name of our entry in the model's metadata table


def _converter():
    """litert-torch, which brings JAX and more: only an export imports it."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its own progress bars; ours report the step
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with quiet(), native_quiet():  # absl and oneDNN notes on first import
            import litert_torch
    except ImportError as e:
        raise BackendUnavailable(f'litert-torch is not installed ({e}); run: {install_hint("litert")}') from None
    return litert_torch


def _runtime():
    """LiteRT's interpreter alone (ai-edge-litert, about 40 MiB in a process): what runs a file."""
    try:
        with native_quiet():
            from ai_edge_litert import interpreter
    except ImportError as e:
        raise BackendUnavailable(f'ai-edge-litert is not installed ({e}); run: {install_hint("litert")}') from None
    return interpreter


@contextlib.contextmanager
def _layout_partitioner(name: str | None):
    """litert-torch's NCHW→NHWC layout pass, by partitioner. Its default (min-cut) mixes layouts around
    a dequantize in our INT8 stem and fails a shape check; the greedy one converts it."""
    if name is None:
        yield
        return
    saved = os.environ.get("LAYOUT_OPTIMIZE_PARTITIONER")
    os.environ["LAYOUT_OPTIMIZE_PARTITIONER"] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LAYOUT_OPTIMIZE_PARTITIONER", None)
        else:
            os.environ["LAYOUT_OPTIMIZE_PARTITIONER"] = saved


def _named(module, names: tuple[str, ...]):
    """``module`` returning a dict, so that the file's signature names its outputs as we do."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, input):  # noqa: A002 — the name becomes the signature's input name
            outputs = self.inner(input)
            return dict(zip(names, outputs if isinstance(outputs, (tuple, list)) else (outputs,)))

    named = Named()
    named.training = False  # not .eval(): an exported graph module refuses train() and eval()
    return named


def convert_module(module, size: tuple[int, int], names: tuple[str, ...], quantizer=None) -> bytes:
    """The ``.tflite`` bytes of ``module`` for a (1, 3, *size) input; ``quantizer`` is the PT2E
    quantizer a converted INT8 graph was annotated with (litert-torch reads its quantize ops)."""
    import torch

    litert_torch = _converter()
    from litert_torch.quantize.quant_config import QuantConfig

    extra = {"quant_config": QuantConfig(pt2e_quantizer=quantizer)} if quantizer is not None else {}
    with torch.no_grad(), quiet("torch"), native_quiet(), _layout_partitioner("GREEDY" if quantizer else None):
        model = litert_torch.convert(_named(module, names), sample_kwargs={INPUT_NAME: torch.zeros(1, 3, *size)},
                                     **extra)
        return bytes(model.model_content())


def fp16_weights(data: bytes) -> bytes:
    """``data`` with every float weight stored as float16 (ai-edge-quantizer's float casting)."""
    with quiet(), native_quiet():
        from ai_edge_quantizer import qtyping, quantizer

        recipe = quantizer.Quantizer(bytearray(data))
        recipe.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                      granularity=qtyping.QuantGranularity.TENSORWISE,
                                      algorithm_key=quantizer.algorithm_manager.AlgorithmName.FLOAT_CASTING)
        return bytes(recipe.quantize().quantized_model)


def with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """``data`` with ``metadata`` as JSON under ``META_KEY`` in its metadata table (replacing ours)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != META_KEY]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_KEY, len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def read_metadata(path: Path) -> dict[str, str]:
    """Our metadata in a ``.tflite`` file ({} for a file from elsewhere)."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) != META_KEY:
            continue
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset() > 1:  # stored after the flatbuffer (files over 2 GB)
            raw = data[buffer.Offset():buffer.Offset() + buffer.Size()]
        else:
            raw = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b"{}"
        try:
            found = json.loads(raw)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {}


def _interpreter(path: Path, threads: int | None = None):
    interpreter = _runtime()
    try:
        with native_quiet():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            return interpreter.Interpreter(model_path=str(path), num_threads=threads or usable_cores())
    except ValueError as e:  # its flatbuffer verifier: a cut or foreign file
        raise UserInputError(f"{Path(path).name}: LiteRT cannot load it ({str(e).splitlines()[0][:120]}); "
                             "re-export it, or check the file was copied whole") from None


class _Signature:
    """A model's one entry point, by name: its signature where it has one (ours do), else the
    interpreter's tensors in order."""

    def __init__(self, interpreter) -> None:
        self.interpreter = interpreter
        signatures = interpreter.get_signature_list()
        self.runner = interpreter.get_signature_runner(next(iter(signatures))) if signatures else None
        if self.runner is not None:
            self.inputs, self.outputs = self.runner.get_input_details(), self.runner.get_output_details()
        else:
            self.inputs = {d["name"]: d for d in interpreter.get_input_details()}
            self.outputs = {d["name"]: d for d in interpreter.get_output_details()}

    def __call__(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.runner is not None:
            return self.runner(**{name: x})
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.inputs[name]["index"], x)
        self.interpreter.invoke()
        return {n: self.interpreter.get_tensor(d["index"]) for n, d in self.outputs.items()}


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return np.array(y, np.float32, copy=True)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def describe(path: Path) -> dict:
    """Input name and shape (batch fixed), output names and our metadata."""
    check_tflite(Path(path))
    return _facts(path, _Signature(_interpreter(path, 1)))


def _facts(path: Path, signature: _Signature) -> dict:
    name, detail = next(iter(signature.inputs.items()))
    metadata = read_metadata(path)
    outputs = json.loads(metadata.get("output_names", "null")) or list(signature.outputs)
    return {"input_name": name, "input_shape": [int(d) for d in detail["shape"]], "dynamic_batch": False,
            "output_names": outputs, "metadata": metadata}


def delegation(path: Path) -> dict:
    """Which ops of the model XNNPACK (LiteRT's default CPU delegate) took, and which run on LiteRT's
    own kernels: ops whose outputs reach the model's outputs or a delegate's inputs without passing
    through a delegate."""
    interpreter = _interpreter(path, 1)
    with native_quiet():
        interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # noqa: SLF001 — the only view of delegate partitions it offers
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {t: op for op in originals for t in op["outputs"]}
    from_delegate = {t for d in delegates for t in d["outputs"]}
    pending = [d["index"] for d in interpreter.get_output_details()] + [t for d in delegates for t in d["inputs"]]
    seen, left = set(), {}
    while pending:
        tensor = pending.pop()
        if tensor in seen or tensor < 0:
            continue
        seen.add(tensor)
        if tensor in from_delegate or tensor not in producer:
            continue
        op = producer[tensor]
        left[op["index"]] = op["op_name"]
        pending.extend(op["inputs"])
    total = len(originals)
    return {"delegate": "xnnpack", "delegate_calls": len(delegates), "ops": total, "delegated_ops": total - len(left),
            "delegated_share": round((total - len(left)) / total, 4) if total else 0.0,
            "litert_kernels": dict(Counter(left.values()))}


class LiteRTRunner(Runner):
    """LiteRT's interpreter with its default CPU delegate (XNNPACK), as an Android app gets it."""

    name = "litert xnnpack"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        self.path, self.threads = Path(path), threads
        self.signature = self.shape = self.input = None
        self.outputs: list[str] = []

    def activate_impl(self) -> None:
        check_tflite(self.path)
        self.signature = _Signature(_interpreter(self.path, self.threads))  # loaded once: describe's facts from it
        info = _facts(self.path, self.signature)
        self.input, self.shape = info["input_name"], tuple(info["input_shape"])
        names = list(self.signature.outputs)
        self.outputs = info["output_names"] if set(info["output_names"]) == set(names) else names

    def deactivate_impl(self) -> None:
        self.signature = None

    def input_names(self) -> list[str]:
        return [self.input]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(next(iter(feeds.values())), np.float32)
        if x.shape != self.shape:
            raise UserInputError(f"{self.path.name} takes input of shape {self.shape}, got {x.shape}")
        x = _quantize(x, self.signature.inputs[self.input])
        start = time.perf_counter()
        out = self.signature(self.input, x)
        self.last_inference_s = time.perf_counter() - start
        return {name: _dequantize(out[name], self.signature.outputs[name]) for name in self.outputs}


class LiteRTTarget(PT2ETarget):
    name, title, aliases, suffix = "litert", "LiteRT", ("tflite",), ".tflite"
    precisions, default_precision = ("fp32", "fp16", "int8"), "fp32"
    extra, dynamic_batch = "litert", False
    quantizer, encoding = "litert-torch", "xnnpack"  # the encoding XNNPACK takes whole (module docstring)
    packages = (Package("litert_torch", "litert-torch", "LiteRT target (.tflite: converter, PT2E INT8)", "litert"),
                Package("ai_edge_litert.interpreter", "ai-edge-litert", "LiteRT runtime (XNNPACK on the CPU)", "litert"))
    no_taps_reason = ("a LiteRT model runs as XNNPACK delegate calls: intermediate tensors inside them cannot be "
                      "read; compare the ONNX or OpenVINO artifact")

    def unavailable_reason(self) -> str | None:
        missing = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
        return f"{' and '.join(missing)} not installed; run: {install_hint('litert')}" if missing else None

    def runtimes(self, device: str | None = None) -> list[str]:
        return ["xnnpack"] if self.unavailable_reason() is None else []

    def no_runtime_reason(self) -> str:
        return self.unavailable_reason() or ("LiteRT runs only on the CPU here (XNNPACK); its GPU and NPU delegates "
                                             "run on the device")

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        module = sources.deploy_form(self.encoding)
        names = tuple(module.output_names)
        request.metadata.update(runtime="litert", output_names=json.dumps(list(names)))
        if request.precision == "int8":
            calibrated, seconds = self.calibrated(sources)
            candidate = Int8Candidate(calibrated, sources.size, names)
            with sources.progress.step("Converting to LiteRT (INT8)"):
                max_weight = self.write_int8(candidate, request.path, request.metadata)
            return Exported(request.path, {"quantization": {
                "encoding": self.encoding, "calibrator": "pt2e (litert-torch PT2EQuantizer)",
                "statistic": sources.statistic, "calib_images": int(len(sources.calib)), "calib_seconds": seconds,
                "float_for_speed": 0, "weights": "int8 symmetric per output channel", "weight_bits": 8,
                "max_abs_weight": max_weight, "activations": "int8 per tensor (asymmetric)",
                "quantized_ops": ["conv", "linear"], "exact_on": EXACT_ON}})
        with sources.progress.step(f"Converting to LiteRT ({request.precision.upper()})"):
            data = sources.once(("litert fp32",), lambda: convert_module(module, sources.size, names))
            data = fp16_weights(data) if request.precision == "fp16" else data
            self._save(data, request.path, request.metadata)
        return Exported(request.path)

    def write_int8(self, candidate: Int8Candidate, path: Path, metadata: dict[str, str]) -> int:
        """Convert the candidate's quantized graph and write it; returns its largest |int8 weight|."""
        from torchao.quantization.pt2e import move_exported_model_to_eval

        graph = move_exported_model_to_eval(convert(candidate.calibrated, fold_weights=False))
        # The converter reads only whether the quantizer is static or dynamic: its observers are done.
        data = convert_module(graph, candidate.size, candidate.outputs, policy_quantizer(self.quantizer, "minmax"))
        metadata.update(quantization="int8 pt2e litert", int8_weight_bits="8", int8_exact_on=EXACT_ON)
        self._save(data, path, metadata)
        return max_abs_weight(convert(candidate.calibrated))  # folded: the int8 weights as stored

    @staticmethod
    def _save(data: bytes, path: Path, metadata: dict[str, str]) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(with_metadata(data, metadata))

    def inspect(self, path: Path) -> dict:
        return {"delegation": delegation(path)}

    def describe(self, path: Path) -> dict:
        return describe(path)

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> LiteRTRunner:
        return LiteRTRunner(path, threads)

    def render(self, entry: dict) -> list[str]:
        facts = (entry.get("graph") or {}).get("delegation")
        if not facts:
            return []
        left = ", ".join(f"{k} {v}" for k, v in facts["litert_kernels"].items()) or "none"
        return [f"- LiteRT `{entry['path'] or 'removed'}`: XNNPACK took {facts['delegated_ops']} of {facts['ops']} ops "
                f"({facts['delegated_share']:.0%}) in {facts['delegate_calls']} delegate call(s); left to LiteRT's "
                f"kernels: {left}"]


TARGET = LiteRTTarget()
