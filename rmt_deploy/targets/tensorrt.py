"""TensorRT target: a TensorRT-ready ONNX per precision, an engine where a GPU is, a script where not.

INT8 is explicit quantization only (the Q/DQ ONNX); FP16 is an FP16 ONNX (what strongly-typed
TensorRT 11 builds need), with the FP16 builder flag added where the version still has it.
Engines are tied to the GPU and TensorRT version that built them: a JSON sidecar records both,
and loading an engine on anything else fails with a clear message.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..artifacts import artifact_stem
from ..atomic import atomic_path, write_text_atomic
from ..errors import BackendUnavailable, ConversionError, UserInputError
from .base import ExportRequest, Exported, Package, Sources, Target, TargetOptions
from .formats import read_engine_sidecar, sidecar_path
from .runner import Runner
from .trt_readiness import profile_shapes, render_readiness

__all__ = ["TARGET", "TensorRTTarget", "TensorRTOptions", "EngineSettings", "engine_unavailable_reason",
           "trtexec_command", "write_build_script", "build_engine", "engine_summary", "describe", "sidecar_path",
           "BUILD_SCRIPT"]

BUILD_SCRIPT = "build_engine.sh"


@dataclass(frozen=True)
class EngineSettings:
    """Builder options shared by `export --target trt` and `build-engine`."""

    workspace_gib: float = 2.0
    timing_cache: Path | None = None
    dla_core: int | None = None
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32

    def check(self) -> None:
        if not self.workspace_gib > 0:
            raise UserInputError("--workspace must be a positive number of GiB")
        if self.dla_core is not None and self.dla_core < 0:
            raise UserInputError("--dla-core must be 0 or more")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserInputError(f"batch profile needs 1 <= min ({self.min_batch}) <= opt ({self.opt_batch}) "
                                 f"<= max ({self.max_batch})")


@dataclass(frozen=True)
class TensorRTOptions(TargetOptions):
    """What ``export --target trt`` accepts beyond the shared options."""

    KEYS: ClassVar = {"require-engine": ("require_engine", (bool,))}
    FLAGS: ClassVar = "--require-engine"

    require_engine: bool = False  # no GPU/TensorRT here is an error, not a skip


def engine_unavailable_reason() -> str | None:
    """Why no engine can be built here (no TensorRT, no NVIDIA GPU), or None."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return ("TensorRT is not installed here (engines need an NVIDIA GPU; run the generated "
                f"{BUILD_SCRIPT} or `rmt-deploy build-engine` on the device)")
    if not _gpu_name():
        return f"no NVIDIA GPU found (run {BUILD_SCRIPT} or `rmt-deploy build-engine` on the device)"
    return None


def _gpu_name() -> str | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            return None
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    return props.name.decode().rstrip("\x00") if int(err) == 0 else None


def _compute_capability() -> str | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    err, props = cudart.cudaGetDeviceProperties(0)
    return f"{props.major}.{props.minor}" if int(err) == 0 else None


def _shape_arg(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(str(d) for d in shape)}"


def trtexec_command(onnx_name: str, engine_name: str, precision: str, input_name: str, input_shape: list,
                    settings: EngineSettings, metadata: dict[str, str] | None = None) -> list[str]:
    """The trtexec call equivalent to ``build_engine`` (for hosts with TensorRT but not this tool)."""
    cmd = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}",
           f"--memPoolSize=workspace:{int(settings.workspace_gib * 1024)}M"]
    if precision in ("fp16", "int8"):  # the FP16 ONNX / the Q/DQ nodes carry the precision (TensorRT 11 needs it)
        cmd.append("--stronglyTyped")
    shapes = profile_shapes(input_shape, metadata or {}, (settings.min_batch, settings.opt_batch, settings.max_batch))
    if shapes is not None:
        cmd += [f"--{kind}Shapes={_shape_arg(input_name, shape)}" for kind, shape in zip(("min", "opt", "max"), shapes)]
    if settings.timing_cache:
        cmd.append(f"--timingCacheFile={settings.timing_cache}")
    if settings.dla_core is not None:
        cmd += [f"--useDLACore={settings.dla_core}", "--allowGPUFallback"]
    return cmd


def write_build_script(folder: Path, commands: list[list[str]]) -> Path:
    """build_engine.sh: one trtexec line per TensorRT-ready ONNX in ``folder``."""
    lines = ["#!/usr/bin/env bash",
             "# Build TensorRT engines on the target device (e.g. a Jetson) from the TensorRT-ready ONNX",
             "# files next to this script. Either run this (needs trtexec on PATH, e.g. /usr/src/tensorrt/bin)",
             "# or `rmt-deploy build-engine FILE.onnx`, which also writes the version/GPU sidecar.",
             "set -euo pipefail", 'cd "$(dirname "$0")"']
    lines += [" ".join(shlex.quote(part) for part in cmd) for cmd in commands]
    return write_text_atomic(folder / BUILD_SCRIPT, "\n".join(lines) + "\n", mode=0o755)


def engine_summary(engine: Path, sidecar: dict) -> str:
    """One line about a built engine and where its sidecar is."""
    return (f"engine: {engine} (TensorRT {sidecar['tensorrt']}, {sidecar['gpu']}, {sidecar['build_seconds']:.0f} s); "
            f"sidecar: {sidecar_path(engine)}")


def build_engine(onnx_path: Path, engine_path: Path, settings: EngineSettings) -> dict:
    """Build an engine with the TensorRT Python API (10.x / 11.x); write it and its sidecar."""
    reason = engine_unavailable_reason()
    if reason:
        raise BackendUnavailable(reason)
    settings.check()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = (1 << int(strongly_typed)) if strongly_typed is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc().splitlines()[0] for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    inp = network.get_input(0)
    shape = list(inp.shape)
    shapes = profile_shapes(shape, _onnx_metadata(onnx_path), (settings.min_batch, settings.opt_batch,
                                                               settings.max_batch))  # height, width too: --dynamic
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, *shapes)
        config.add_optimization_profile(profile)
    if settings.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache = None
    if settings.timing_cache:
        data = Path(settings.timing_cache).read_bytes() if Path(settings.timing_cache).exists() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ConversionError(f"TensorRT could not build an engine from {onnx_path.name} (see the log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(plan))
    if cache is not None:
        with atomic_path(Path(settings.timing_cache)) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = {"tensorrt": trt.__version__, "gpu": _gpu_name(), "compute_capability": _compute_capability(),
               "precision": _precision_of(onnx_path), "input": inp.name, "input_shape": shape,
               "profile": None if shapes is None else [list(s) for s in shapes],  # min, opt, max input shapes
               "dla_core": settings.dla_core, "source_onnx": onnx_path.name,
               "source_onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
               "build_seconds": round(time.perf_counter() - start, 2),
               "metadata": _onnx_metadata(onnx_path)}  # preprocessing and classes, for predict and bench
    write_text_atomic(sidecar_path(engine_path), json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def _onnx_metadata(onnx_path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}


def _precision_of(onnx_path: Path) -> str:
    return _onnx_metadata(onnx_path).get("precision", "unknown")


def describe(path: Path) -> dict:
    """Input and metadata of an engine, from its sidecar: the source ONNX's metadata (preprocessing,
    classes) under the engine's own facts (TensorRT version, GPU, precision)."""
    sidecar = read_engine_sidecar(Path(path))
    facts = {k: v for k, v in sidecar.items() if k != "metadata"}
    return {"input_name": sidecar["input"], "input_shape": sidecar["input_shape"],
            "dynamic_batch": sidecar["input_shape"][0] == -1, "metadata": {**sidecar.get("metadata", {}), **facts}}


def check_engine_matches(engine: Path) -> dict:
    """Refuse an engine built by another TensorRT version or on another GPU."""
    import tensorrt as trt

    sidecar = read_engine_sidecar(engine)
    gpu = _gpu_name()
    if sidecar["tensorrt"] != trt.__version__:
        raise UserInputError(f"{engine.name} was built with TensorRT {sidecar['tensorrt']} but this is "
                             f"{trt.__version__}; rebuild it here with `rmt-deploy build-engine`")
    if sidecar.get("gpu") and gpu and sidecar["gpu"] != gpu:
        raise UserInputError(f"{engine.name} was built on {sidecar['gpu']} but this GPU is {gpu}; "
                             "rebuild it here with `rmt-deploy build-engine`")
    return sidecar


class TensorRTRunner(Runner):
    """Engine execution: bindings by name, device buffers, CUDA events around enqueue."""

    name = "tensorrt"
    device = "gpu"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)

    def activate_impl(self) -> None:
        reason = engine_unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        self.sidecar = check_engine_matches(self.path)
        self.cudart = cudart
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(self.path.read_bytes())
        self.context = self.engine.create_execution_context()
        _, self.stream = cudart.cudaStreamCreate()
        _, self.start_event = cudart.cudaEventCreate()
        _, self.stop_event = cudart.cudaEventCreate()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.trt = trt
        self.buffers: dict[str, tuple[int, int]] = {}

    def deactivate_impl(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers = {}
        self.context = self.engine = None

    def input_names(self) -> list[str]:
        return [n for n in self.names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self.cudart.cudaFree(pointer)
            _, pointer = self.cudart.cudaMalloc(nbytes)
            self.buffers[name] = (pointer, nbytes)
        return pointer

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        for name, array in feeds.items():
            array = np.ascontiguousarray(array, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_input_shape(name, array.shape)
            pointer = self._buffer(name, array.nbytes)
            cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind.cudaMemcpyHostToDevice, self.stream)
            self.context.set_tensor_address(name, pointer)
        outputs = {}
        for name in self.names:
            if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.OUTPUT:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
                self.context.set_tensor_address(name, self._buffer(name, outputs[name].nbytes))
        cudart.cudaEventRecord(self.start_event, self.stream)
        self.context.execute_async_v3(self.stream)
        cudart.cudaEventRecord(self.stop_event, self.stream)
        for name, array in outputs.items():
            cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[name][0], array.nbytes,
                                   kind.cudaMemcpyDeviceToHost, self.stream)
        cudart.cudaStreamSynchronize(self.stream)
        _, ms = cudart.cudaEventElapsedTime(self.start_event, self.stop_event)
        self.last_inference_s = ms / 1000.0
        return outputs


class TensorRTTarget(Target):
    """Writes the TensorRT-ready ONNX and checks it everywhere; builds and verifies the engine
    where TensorRT and a GPU are."""

    name, title, aliases, suffix = "trt", "TensorRT", ("tensorrt", "engine"), ".engine"
    precisions, default_precision = ("fp16", "int8", "fp32"), "fp16"
    calibrated_int8, extra, needs = True, "trt", "nvidia-gpu"
    dynamic_size = True  # height and width in the optimisation profile, from the artifact's dynamic_size
    options_type = TensorRTOptions
    packages = (Package("tensorrt", "tensorrt", "TensorRT engines (needs an NVIDIA GPU)", "trt"),
                Package("tensorrt_rtx", "tensorrt-rtx-cu12", "TensorRT-RTX parse+build proxy (no GPU needed)",
                        "trt-check"))
    gates_accuracy = False  # the engine's accuracy is the device's: gate it there with `rmt-deploy check`
    no_taps_reason = ("engines cannot be tapped here: marking outputs needs a GPU build and changes TensorRT's "
                      "fusions; compare the .trt.onnx beside the engine instead")

    def require(self, options: TensorRTOptions | None, precisions: tuple[str, ...]) -> None:
        if options and options.require_engine:
            reason = engine_unavailable_reason()
            if reason:
                raise BackendUnavailable(f"--require-engine: {reason}")

    def runtimes(self, device: str | None = None) -> list[str]:
        return ["cuda"] if engine_unavailable_reason() is None else []

    def no_runtime_reason(self) -> str:
        return engine_unavailable_reason() or "no TensorRT runtime on this machine"

    def onnx_path(self, folder: Path, precision: str) -> Path:
        return folder / f"{artifact_stem(precision)}.trt.onnx"

    def leftovers(self, folder: Path, precision: str) -> list[Path]:
        return [*super().leftovers(folder, precision), *folder.glob(self.onnx_path(folder, precision).name)]

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        import onnx

        from .onnx import OnnxRuntimeRunner
        from .onnx import describe as describe_onnx
        from .onnx_export import save as save_onnx
        from .trt_readiness import readiness, rtx_build, with_trial_build

        precision, dynamic = request.precision, request.dynamic_batch
        onnx_path, fields = self.onnx_path(request.path.parent, precision), {}
        request.metadata["intended_runtime"] = "tensorrt"
        if precision == "int8":
            int8 = sources.int8_qdq(self.name)  # GPUs accumulate in int32: TensorRT gets the full 8-bit grid
            request.metadata.update(int8.metadata)
            fields["quantization"] = int8.quantization
            proto = copy.deepcopy(int8.model)
        else:
            source = sources.fp16_onnx(dynamic) if precision == "fp16" else sources.deploy_onnx(dynamic)
            proto = onnx.load(str(source))
        start = time.perf_counter()
        with sources.progress.step(f"Writing the TensorRT-ready {precision.upper()} ONNX"):
            save_onnx(proto, onnx_path, request.metadata)
        seconds = round(time.perf_counter() - start, 2)  # export_seconds: the ONNX, not the checks or the engine
        with sources.progress.step(f"Checking TensorRT readiness of {onnx_path.name}"):
            fields["readiness"] = readiness(onnx.load(str(onnx_path)), dynamic)
            fields["readiness"] = with_trial_build(fields["readiness"], rtx_build(onnx_path))
        fields["onnx"] = onnx_path.name
        # The same graph run by ONNX Runtime without its int8 kernels (Q/DQ as float math, what TensorRT
        # computes): fused kernels would saturate the full 8-bit grid on x86 CPUs without VNNI.
        with OnnxRuntimeRunner(onnx_path, request.threads, fuse_int8=False, memory_pattern=False) as runner:
            fields["onnx_parity"] = sources.parity(runner, dynamic)
            if sources.dynamic_size:  # --dynamic: also at the profile's ends
                fields["onnx_parity_at_sizes"] = sources.parity_at_other_sizes(runner, dynamic)
        info = describe_onnx(onnx_path)
        fields["trtexec"] = trtexec_command(onnx_path.name, request.path.name, precision, info["input_name"],
                                            info["input_shape"], EngineSettings(), info["metadata"])
        if fields["readiness"]["status"] != "ready":
            onnx_path.unlink()
            return Exported(None, fields, "failed", "readiness",
                            "; ".join(fields["readiness"]["problems"])[:300] + "; model removed", seconds=seconds)
        reason = engine_unavailable_reason()
        if reason:
            return Exported(None, fields, "skipped", reason=f"engine not built: {reason}", shipped=onnx_path,
                            seconds=seconds)
        with sources.progress.step(f"Building the TensorRT {precision.upper()} engine"):
            fields["engine"] = build_engine(onnx_path, request.path, EngineSettings())
        return Exported(request.path, fields, seconds=seconds)

    def finalize(self, folder: Path, entries: list[dict]) -> None:
        commands = [e["trtexec"] for e in entries if e.get("trtexec") and e["status"] != "failed"]
        if commands:
            write_build_script(folder, commands)

    def describe(self, path: Path) -> dict:
        return describe(path)

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> TensorRTRunner:
        return TensorRTRunner(path)

    def render(self, entry: dict) -> list[str]:
        return render_readiness(entry, BUILD_SCRIPT)


TARGET = TensorRTTarget()
