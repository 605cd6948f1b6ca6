"""OpenVINO target: deploy-form ONNX → OpenVINO IR (model.xml + model.bin); OpenVINO runner.

Precisions: ``fp32`` (FP32 weights), ``fp16`` (FP16-compressed weights), ``int8`` (NNCF's
OpenVINO backend with our policy, ``rmt_deploy.quant``).

What runs: OpenVINO's CPU plugin computes an IR's float layers in bf16 by default on CPUs with
AVX512-BF16 or AMX (fp16 on ARM), whatever the IR says — nothing in an IR sets the inference
precision, and per-node "keep f32" marks are lost where the plugin rewrites attention and
LayerNorm into its own nodes (measured: docs/targets/openvino.md "On CPUs with bf16"). So every IR records
the compile properties it was verified with (``VERIFIED_CONFIG``, exact f32 float layers) in its
rt_info, runners compile with them unless asked for the device default (``execution="default"``),
and the export also measures the device default where it differs (``default_runner``).

Metadata is kept in the IR's rt_info under ``rmt_deploy``; every runner reports the
precision the device really used.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..cpu import restricted_threads
from ..errors import UserInputError
from ..optional import install_hint, require
from .base import EXECUTIONS, ExportRequest, Exported, Package, Sources, Target
from .formats import check_openvino_ir
from .openvino_tables import unfold_position_tables
from .runner import Runner

__all__ = ["TARGET", "OpenVINOTarget", "convert", "unfold_position_tables", "save", "read_model", "describe",
           "inspect_graph", "OpenVINORunner", "HINTS", "RT_INFO_KEY", "VERIFIED_CONFIG", "device_default_precision"]

RT_INFO_KEY = "rmt_deploy"
# Compile properties every IR is verified with, stored in its rt_info (``compile_config``): float
# layers in exact f32 on every device (OpenVINO reports the precision hint as "dynamic").
VERIFIED_CONFIG = {"EXECUTION_MODE_HINT": "ACCURACY"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI")  # pick or combine real devices at compile time
# Runtime layer types that only move or hold data: left out of the precision counts.
_NOT_COMPUTE = {"Const", "Input", "Output", "Parameter", "Result", "Reshape", "Reorder", "Transpose", "Concatenation",
                "Split", "Squeeze", "Unsqueeze"}


def _ov():
    return require("openvino", "openvino")


def convert(onnx_path: Path):
    """The deploy-form ONNX as an ``openvino.Model`` (FP32)."""
    return _ov().convert_model(str(onnx_path))


def save(model, path: Path, metadata: dict[str, str]) -> Path:
    """Write ``model`` as ``path`` (.xml) + .bin with ``metadata`` in its rt_info, atomically.

    Weights are FP16-compressed unless the metadata says the precision is fp32 (int8 weights
    stay int8 either way).
    """
    from .onnx_export import FOLD_LIMIT

    ov = _ov()
    model = model.clone()  # rt_info and compression must not touch the caller's model
    unfold_position_tables(model, FOLD_LIMIT)  # the file holds the small tables, as the ONNX does
    if model.has_rt_info(RT_INFO_KEY):
        del model.get_rt_info()[RT_INFO_KEY]
    for key, value in metadata.items():
        model.set_rt_info(str(value), [RT_INFO_KEY, key])
    path = Path(path)
    with atomic_path(path, ".bin") as tmp:
        ov.save_model(model, str(tmp), compress_to_fp16=metadata.get("precision") != "fp32")
    return path


def read_model(path: Path):
    """An IR file, with a clear error when its weights file is missing."""
    path = Path(path)
    if not path.with_suffix(".bin").exists():
        raise FileNotFoundError(f"{path.with_suffix('.bin').name} (the weights of {path.name}) is missing; keep "
                                "the .xml and .bin together")
    return _ov().Core().read_model(str(path))


def _metadata(model) -> dict[str, str]:
    if not model.has_rt_info(RT_INFO_KEY):
        return {}
    return {key: value.astype(str) for key, value in model.get_rt_info()[RT_INFO_KEY].items()}


def describe(path: Path) -> dict:
    """What a runner needs to feed an artifact: input name/shape, batch dimension, metadata."""
    check_openvino_ir(Path(path))
    model = read_model(path)
    shape = model.input(0).get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    return {"input_name": model.input(0).get_any_name(), "input_shape": dims, "dynamic_batch": dims[0] is None,
            "metadata": _metadata(model)}


def inspect_graph(path: Path) -> dict:
    """Op histogram of the IR and its quantization: FakeQuantize count, int8 weight constants."""
    from ..quant.openvino_int8 import int8_summary

    model = read_model(path)
    ops = Counter(op.get_type_name() for op in model.get_ops() if op.get_type_name() != "Constant")
    weights = Counter(op.get_element_type().get_type_name() for op in model.get_ops()
                      if op.get_type_name() == "Constant" and op.get_byte_size() > 1024)
    return {"nodes": sum(ops.values()), "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
            "constant_dtypes": dict(weights), "int8": int8_summary(model),
            "attention": ops.get("ScaledDotProductAttention", 0)}


def device_default_precision(device: str = "CPU") -> str | None:
    """The precision ``device`` computes float layers in at OpenVINO's defaults (bf16 on CPUs with
    AVX512-BF16 or AMX, f32 on others), or None when the device does not say."""
    try:
        return str(_ov().Core().get_property(device, "INFERENCE_PRECISION_HINT").get_type_name())
    except Exception:  # noqa: BLE001 — devices without the property (NPU plugins differ)
        return None


class OpenVINORunner(Runner):
    """A compiled model and one infer request; ``throughput`` runs an async queue.

    ``execution="verified"`` compiles with the properties the IR records (``compile_config``, the
    setting its numbers were verified with); ``"default"`` with the device's own defaults.

    An IR with dynamic height and width (``export --dynamic``) also gets a static copy for each batch
    fed at its verified size, compiled when first fed: OpenVINO's CPU plugin runs a dynamic-shape
    model about 1.1–1.4× slower than a static one (``benches/bench_dynamic.py``). Other sizes run on
    the dynamic model; ``last_model`` says which ran.
    """

    STATIC_COPIES = 4  # static copies kept; the least recently used one goes first

    def __init__(self, path: Path, threads: int | None = None, device: str = "CPU", hint: str = "latency",
                 execution: str = "verified") -> None:
        super().__init__()
        if hint not in HINTS:
            raise ValueError(f"hint must be one of {', '.join(HINTS)}, not {hint!r}")
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}, not {execution!r}")
        self.path, self.threads, self.hint, self.device_name = Path(path), threads, hint, device
        self.execution_setting = execution
        self.name = (f"openvino {device}" + (" throughput" if hint == "throughput" else "")
                     + (" (device default)" if execution == "default" else ""))
        self.device = device.lower()
        self.compiled = self.request = None
        self.static_size: tuple[int, int] | None = None  # a dynamic IR's verified (H, W): static copies
        self._static: dict[tuple[int, ...], tuple] = {}  # input shape → (compiled, request)

    def config(self, metadata: dict[str, str]) -> dict:
        config = {"PERFORMANCE_HINT": HINTS[self.hint]}
        threads = self.threads or restricted_threads()
        if threads and self.device_name == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        if self.execution_setting == "verified" and self.device_name in ("CPU", "GPU"):
            if metadata.get("compile_config"):
                config.update(json.loads(metadata["compile_config"]))
            elif metadata.get("precision", "fp32") == "fp32":  # IRs from rmt-deploy < 0.4
                config["INFERENCE_PRECISION_HINT"] = "f32"
        return config

    def activate_impl(self) -> None:
        ov = _ov()
        model = read_model(self.path)
        metadata = _metadata(model)
        self.compiled = ov.Core().compile_model(model, self.device_name, self.config(metadata))
        self.request = self.compiled.create_infer_request()
        dims = model.input(0).get_partial_shape()
        if metadata.get("dynamic_size") and metadata.get("input_size") and not (dims[2].is_static or dims[3].is_static):
            self.static_size = tuple(int(v) for v in metadata["input_size"].split("x"))

    def deactivate_impl(self) -> None:
        self.request = self.compiled = None
        self._static = {}

    def _request_for(self, shape: tuple[int, ...]):
        """The infer request and compiled model to run an input of ``shape`` on."""
        shape = tuple(shape)
        if self.static_size is None or shape[2:] != self.static_size:
            self.last_model = "dynamic" if self.static_size else None
            return self.request, self.compiled
        if shape not in self._static:
            if len(self._static) >= self.STATIC_COPIES:
                del self._static[next(iter(self._static))]
            model = read_model(self.path)
            model.reshape({model.input(0).get_any_name(): list(shape)})
            compiled = _ov().Core().compile_model(model, self.device_name, self.config(_metadata(model)))
            self._static[shape] = (compiled.create_infer_request(), compiled)
        self._static[shape] = self._static.pop(shape)  # most recently used last
        self.last_model = "static copy"
        return self._static[shape]

    def input_names(self) -> list[str]:
        return [i.get_any_name() for i in self.compiled.inputs]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request, compiled = self._request_for(next(iter(feeds.values())).shape)
        start = time.perf_counter()
        request.infer(feeds)
        self.last_inference_s = time.perf_counter() - start
        # The request reuses its output buffers: copy before the next call.
        return {out.get_any_name(): request.get_tensor(out).data.copy() for out in compiled.outputs}

    def execution(self) -> dict:
        """What the device really runs: its inference precision and layer counts per precision."""
        runtime = self.compiled.get_runtime_model()
        counts: Counter = Counter()
        for op in runtime.get_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) not in _NOT_COMPUTE:
                counts[info["runtimePrecision"].astype(str)] += 1
        try:
            hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
            mode = str(self.compiled.get_property("EXECUTION_MODE_HINT")).split(".")[-1]
        except Exception:  # noqa: BLE001 — devices without the property (NPU plugins differ)
            hint = mode = None
        # ACCURACY lowers nothing (its precision hint reads "dynamic"): float layers run in f32.
        static = {"static_at": list(self.static_size)} if self.static_size else {}
        return {"device": self.device_name, "inference_precision": "f32" if mode == "ACCURACY" else hint,
                "execution_mode": mode, "config": self.execution_setting, "layers_by_precision": dict(counts),
                "hint": self.hint, **static}

    def throughput(self, feeds: dict[str, np.ndarray], seconds: float) -> dict:
        """Images per second with as many parallel requests as the device suggests."""
        ov = _ov()
        compiled = self._request_for(next(iter(feeds.values())).shape)[1]
        jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        queue = ov.AsyncInferQueue(compiled, jobs)
        batch = next(iter(feeds.values())).shape[0]
        for _ in range(jobs):  # warm every request
            queue.start_async(feeds)
        queue.wait_all()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < 2 * jobs:
            queue.start_async(feeds)
            done += 1
        queue.wait_all()
        elapsed = time.perf_counter() - start
        return {"images_per_s": round(done * batch / elapsed, 2), "requests": jobs, "seconds": round(elapsed, 2)}


class OpenVINOTapsRunner(OpenVINORunner):
    """CPU, on the model read from the IR with ``tensors`` added as outputs (``Model.add_outputs``);
    the files are not changed. Its outputs are keyed by the tensor names asked for."""

    def __init__(self, path: Path, tensors: list[str], threads: int | None = None) -> None:
        super().__init__(path, threads)
        self.tensors, self.name = list(tensors), "openvino CPU (tapped copy)"

    def activate_impl(self) -> None:
        ov = _ov()
        model = read_model(self.path)
        metadata = _metadata(model)
        model.add_outputs(self.tensors)
        self.compiled = ov.Core().compile_model(model, "CPU", self.config(metadata))
        self.request = self.compiled.create_infer_request()

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        self.request.infer(feeds)
        self.last_inference_s = time.perf_counter() - start
        wanted, values = set(self.tensors), {}
        for out in self.compiled.outputs:
            value = self.request.get_tensor(out).data.copy()
            for name in (out.get_names() & wanted) or {out.get_any_name()}:
                values[name] = value
        return values


def _tap_map(onnx_path: Path) -> dict[str, str]:
    """The tap map the ONNX export recorded: OpenVINO keeps the ONNX tensor names."""
    import onnx

    from ..rewrite.taps import TAPS_KEY

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key == TAPS_KEY}


def check_device(device: str | None) -> None:
    """A device name OpenVINO knows here (virtual devices such as AUTO always pass)."""
    if device is None:
        return
    devices = _ov().Core().available_devices
    if device not in devices and device.split(":")[0] not in _VIRTUAL_DEVICES:
        raise UserInputError(f"--device {device}: OpenVINO sees {', '.join(devices) or 'no device'} on this "
                             "machine (AUTO picks one)")


def render_graph(entry: dict) -> list[str]:
    graph = entry["graph"]
    int8, dtypes = graph["int8"], ", ".join(f"{k} {v}" for k, v in graph["constant_dtypes"].items())
    return [f"- IR `{entry['path'] or 'removed'}` + `.bin`, {graph['nodes']} ops, {graph['attention']} "
            f"ScaledDotProductAttention; weight constants by type: {dtypes}"
            + (f"; {int8['quantized_layers']} int8 layers, {int8['fake_quantize']} FakeQuantize"
               if int8["quantized_layers"] else "")]


class OpenVINOTarget(Target):
    name, title, aliases, suffix = "openvino", "OpenVINO", ("ov", "ir"), ".xml"
    precisions, default_precision = ("fp16", "int8", "fp32"), "fp16"
    calibrated_int8, extra = True, "openvino"
    dynamic_size = True
    packages = (Package("openvino", "openvino", "OpenVINO target (IR, CPU/GPU/NPU runtime)", "openvino"),)
    isolates_int8, checked_by = True, "openvino CPU"

    def unavailable_reason(self) -> str | None:
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            return f'openvino is not installed ({e}); run: {install_hint("openvino")}'
        return None

    def runtimes(self, device: str | None = None) -> list[str]:
        """OpenVINO devices on this machine (CPU, GPU, NPU …), or the one asked for."""
        return [device] if device else list(_ov().Core().available_devices)

    def accepts_runtime(self, runtime: str) -> bool:
        return runtime in self.runtimes() or runtime.split(":")[0] in _VIRTUAL_DEVICES

    def no_runtime_reason(self) -> str:
        return "OpenVINO reports no device on this machine"

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        fields = {"compile_config": VERIFIED_CONFIG}
        onnx_path = sources.deploy_onnx(request.dynamic_batch)  # INT8 is calibrated from it too (same names)
        request.metadata.update({**_tap_map(onnx_path), "compile_config": json.dumps(VERIFIED_CONFIG)})
        if request.precision == "int8":
            int8 = sources.int8_openvino(self.name)
            request.metadata.update(int8.metadata)
            fields["quantization"] = int8.quantization
            model = int8.model
        else:
            with sources.progress.step(f"Converting to OpenVINO IR ({request.precision.upper()} weights)"):
                model = convert(onnx_path)
        save(model, request.path, request.metadata)
        return Exported(request.path, fields)

    def inspect(self, path: Path) -> dict:
        return inspect_graph(path)

    def machine_facts(self) -> dict:
        """What OpenVINO's CPU plugin computes float layers in by default here (bf16 on AVX512-BF16/AMX)."""
        return {"openvino_cpu_default_precision": None if self.unavailable_reason()
                else device_default_precision("CPU")}

    def int8_weight_grid(self, path: Path) -> dict:
        from ..quant.openvino_int8 import weight_grid

        return weight_grid(read_model(path))

    def describe(self, path: Path) -> dict:
        return describe(path)

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> OpenVINORunner:
        return OpenVINORunner(path, threads, runtime or "CPU", hint, execution)

    def default_runner(self, path: Path, threads: int | None = None) -> OpenVINORunner | None:
        """The IR on the CPU at OpenVINO's defaults, when they lower float layers (bf16 on CPUs with
        AVX512-BF16 or AMX) below the f32 it was verified in; None where the defaults are f32."""
        if device_default_precision("CPU") in (None, "f32"):
            return None
        return OpenVINORunner(path, threads, "CPU", execution="default")

    def load_taps(self, path: Path, tensors: list[str], threads: int | None = None) -> OpenVINORunner:
        return OpenVINOTapsRunner(path, tensors, threads)

    def revertible(self, path: Path, sources: Sources):
        from ..quant.openvino_int8 import OPENVINO_FQ

        return read_model(path), sources.int8_openvino(self.name).float_model, OPENVINO_FQ

    def save_model(self, model, path: Path, metadata: dict[str, str]) -> Path:
        return save(model, path, metadata)

    def render(self, entry: dict) -> list[str]:
        return render_graph(entry) if entry.get("graph") else []


TARGET = OpenVINOTarget()
