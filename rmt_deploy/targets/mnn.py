"""MNN target: the standard ONNX → ``model.mnn`` (FP32), ``model_fp16.mnn`` (FP16 weights) and
``model_int8.mnn`` (INT8 weights and activations by MNN's offline quantizer, calibrated on the
export's images); run and verified by MNN's own runtime on this machine.

No network, no installs. MNN's Python tools package (``MNN.tools``, behind its ``mnnconvert`` and
``mnnquant`` commands) pip-installs a logging SDK when it is imported and uploads conversion details.
The ``mnn`` wheel also ships the converter and the quantizer as a native module of their own,
``_tools``: this module calls that and never imports ``MNN.tools`` (``tests/test_mnn.py`` watches
sockets and subprocesses during an export).

What the tools do (mnn 3.6.1, read off their behaviour here):
- ``_tools.mnnconvert`` returns True whatever happened and prints to the process's own stdout; the
  file it was to write is the only sign of success, so it is checked and loaded.
- By default the converter swaps exact (Erf) GELU for its tanh approximation, 7e-4 away from PyTorch
  on the demo's logits; ``--useGeluApproximation 0`` keeps it exact (2e-6).
- The quantizer can abort its process (some methods crash on batch-1 Reshapes): it runs in a child
  process, on our own preprocessed tensors (its "sequence" input), with EMA activation ranges.
- Metadata: the artifact's metadata as JSON in the model's ``bizCode`` string, which MNN's own API
  reads back (``get_info()["bizCode"]``); the quantizer drops it, so INT8 files get it again by an
  MNN → MNN pass that leaves the weights as they are.
"""
from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..cpu import usable_cores
from ..errors import UserInputError
from ..optional import install_hint, require
from ..quiet import native_quiet
from .base import EXECUTIONS, ExportRequest, Exported, Package, Sources, Target
from .formats import check_mnn
from .runner import Runner

__all__ = ["TARGET", "MNNTarget", "MNNRunner", "convert", "quantize", "describe", "PRECISION"]

# MNN's BackendConfig precision modes. "high" computes float layers in FP32 on every CPU; MNN's own
# default, "normal", may use FP16 arithmetic where the CPU has it (ARMv8.2 and later).
PRECISION = {"verified": ("high", 1), "default": ("normal", 0)}
# Measured under qemu 10 (tests/test_arm64.py): MNN 3.6's int8 kernels for CPUs with I8MM (ARMv8.6:
# Cortex-A710/X2 and later, Neoverse N2/V1) compute other results than its NEON/dot-product ones, SVE on
# or off; the I8MM instructions themselves emulate right. Recorded in every INT8 file; predict and
# bench warn on such a CPU (bench.portability).
INT8_WRONG_ON = {"wrong_on_isa": "I8MM",
                 "wrong_on": "MNN 3.6's int8 kernels for ARM CPUs with I8MM (Cortex-A710/X2 and later, Neoverse "
                             "N2/V1) compute other results: max abs 4.3 on the demo's logits, 88-94 % top-1 agreement"}
QUANT_CONFIG = {"feature_quantize_method": "EMA", "weight_quantize_method": "MAX_ABS", "input_type": "sequence"}
QUANTIZATION = {"encoding": "generic", "calibrator": "mnn (offline quantizer: EMA activation ranges)", "statistic": "minmax",
                "weights": "int8 symmetric per output channel (largest |w|)", "activations": "int8 per tensor (EMA of min/max)",
                "float_for_speed": 0}


def _mnn():
    with native_quiet():  # MNN prints a banner on its first import
        return require("MNN", "mnn")


def _mnnconvert(args: list[str], out: Path) -> None:
    out.unlink(missing_ok=True)
    with native_quiet():
        tools = require("_tools", "mnn")  # the native converter; never MNN.tools (see the module docstring)
        tools.mnnconvert(["mnnconvert", *args, "--MNNModel", str(out)])
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"MNN's converter wrote no {out.name} (its log: set RMT_DEPLOY_DEBUG=1)")


def convert(onnx_path: Path, path: Path, metadata: dict[str, str], fp16: bool = False) -> Path:
    """The standard ONNX as an MNN model at ``path``, exact GELU, FP16 weights if asked, atomically."""
    with atomic_path(path) as tmp:
        _mnnconvert(["-f", "ONNX", "--modelFile", str(onnx_path), "--useGeluApproximation", "0",
                     "--bizCode", json.dumps(metadata), *(["--fp16"] if fp16 else [])], Path(tmp))
    return path


def quantize(float_mnn: Path, samples: np.ndarray, path: Path, metadata: dict[str, str], input_name: str) -> dict:
    """INT8 by MNN's offline quantizer on ``samples`` (N, 3, H, W), preprocessed as the model expects;
    returns the report's quantization entry."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rmt-mnn-") as work:
        work = Path(work)
        for i, x in enumerate(samples):
            folder = work / "calib" / f"{i:04d}"
            folder.mkdir(parents=True)
            np.savetxt(folder / f"{input_name}.txt", x.reshape(-1, x.shape[-1]), fmt="%.8g")
            (folder / "input.json").write_text(json.dumps({"inputs": [{"name": input_name, "shape": [1, *x.shape]}]}))
        config = {**QUANT_CONFIG, "path": str(work / "calib") + "/", "used_sample_num": len(samples)}
        (work / "quant.json").write_text(json.dumps(config))
        quantized = work / "quantized.mnn"
        code = ("import sys, _tools; _tools.mnnquant(['mnnquant', sys.argv[1], sys.argv[2], sys.argv[3]])")
        done = subprocess.run([sys.executable, "-c", code, str(float_mnn), str(quantized), str(work / "quant.json")],
                              capture_output=True, text=True, timeout=3600)
        if done.returncode or not quantized.is_file():
            raise RuntimeError(f"MNN's quantizer failed (exit {done.returncode}): "
                               f"{(done.stderr.strip().splitlines() or ['no message'])[-1][:200]}")
        with atomic_path(path) as tmp:
            _mnnconvert(["-f", "MNN", "--modelFile", str(quantized), "--bizCode", json.dumps(metadata)], Path(tmp))
    return {**QUANTIZATION, "calib_images": int(len(samples)), "calib_seconds": round(time.perf_counter() - start, 2)}


def _load(path: Path, threads: int | None, precision: int, dynamic_batch: bool):
    mnn = _mnn()
    with native_quiet():
        manager = mnn.nn.create_runtime_manager(({"backend": "CPU", "numThread": threads or usable_cores(),
                                                  "precision": precision},))
        return mnn.nn.load_module_from_file(str(path), [], [], runtime_manager=manager, shape_mutable=dynamic_batch)


def describe(path: Path) -> dict:
    """Input name and shape and the metadata an rmt-deploy ``.mnn`` carries in its bizCode."""
    check_mnn(Path(path))
    mnn = _mnn()
    try:
        with native_quiet():
            info = mnn.nn.load_module_from_file(str(path), [], []).get_info()
            shapes = {name: var.shape for name, var in mnn.expr.load_as_dict(str(path)).items()}
    except Exception:  # noqa: BLE001 — MNN says only "returned a result with an exception set"
        raise UserInputError(f"{Path(path).name}: MNN cannot load it; re-export it, or check the file was "
                             "copied whole") from None
    try:
        metadata = json.loads(info.get("bizCode") or "{}")
    except ValueError:  # a foreign model: bizCode is any string
        metadata = {}
    metadata = metadata if isinstance(metadata, dict) else {}
    name = info["inputNames"][0]
    dynamic = metadata.get("dynamic_batch") == "true"
    shape = list(shapes.get(name, [1, 3, 0, 0]))
    return {"input_name": name, "input_shape": [None if dynamic else shape[0], *shape[1:]], "dynamic_batch": dynamic,
            "output_names": list(info["outputNames"]), "metadata": {k: str(v) for k, v in metadata.items()}}


class MNNRunner(Runner):
    """MNN's module API on the CPU; ``execution="verified"`` runs float layers at precision high
    (FP32 everywhere), ``"default"`` at MNN's own default, normal."""

    def __init__(self, path: Path, threads: int | None = None, execution: str = "verified") -> None:
        super().__init__()
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {', '.join(EXECUTIONS)}, not {execution!r}")
        self.path, self.threads, self.execution_setting = Path(path), threads, execution
        self.precision_name, self.precision = PRECISION[execution]
        self.name = f"mnn cpu (precision {self.precision_name})"
        self.module = self.input = None
        self.outputs: list[str] = []

    def activate_impl(self) -> None:
        info = describe(self.path)
        self.input, self.outputs = info["input_name"], info["output_names"]
        self.module = _load(self.path, self.threads, self.precision, info["dynamic_batch"])

    def deactivate_impl(self) -> None:
        self.module = None

    def input_names(self) -> list[str]:
        return [self.input]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expr = _mnn().expr
        x = np.ascontiguousarray(next(iter(feeds.values())), np.float32)
        start = time.perf_counter()
        outputs = self.module.onForward([expr.const(x, list(x.shape), expr.NCHW)])
        if not outputs:  # forward() would hand back a null result that crashes when read
            raise RuntimeError(f"MNN could not run an input of shape {tuple(x.shape)} on {self.path.name}")
        values = []
        for y in outputs:
            y = expr.convert(y, expr.NCHW) if y.data_format == expr.NC4HW4 else y
            values.append(np.array(y.read(), np.float32, copy=True))
        self.last_inference_s = time.perf_counter() - start
        return dict(zip(self.outputs, values))

    def execution(self) -> dict:
        """MNN's precision mode and what float layers compute in under it."""
        fp32 = self.precision_name == "high" or not _has_fp16_arithmetic()
        return {"device": "CPU", "config": self.execution_setting, "execution_mode": f"precision {self.precision_name}",
                "inference_precision": "f32" if fp32 else "f16 where MNN chooses"}


def _has_fp16_arithmetic() -> bool:
    return platform.machine().lower() in ("arm64", "aarch64")


class MNNTarget(Target):
    name, title, aliases, suffix = "mnn", "MNN", (), ".mnn"
    precisions, default_precision = ("fp32", "fp16", "int8"), "fp32"
    calibrated_int8, extra = True, "mnn"
    calibrator = "mnn"  # INT8 is calibrated by MNN's own offline quantizer, not NNCF
    statistics = ("minmax",)  # its activation ranges are EMA of min/max; no other estimator
    packages = (Package("MNN", "mnn", "MNN target (.mnn: converter, quantizer and CPU runtime)", "mnn"),)

    def unavailable_reason(self) -> str | None:
        missing = [m for m in ("MNN", "_tools") if importlib.util.find_spec(m) is None]  # _tools: its native converter
        return f"mnn is not installed (no {', '.join(missing)}); run: {install_hint('mnn')}" if missing else None

    def runtimes(self, device: str | None = None) -> list[str]:
        return ["cpu"]

    def no_runtime_reason(self) -> str:
        return "MNN runs on the CPU only here (its GPU backends are not in the PyPI wheel)"

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        onnx_path = sources.deploy_onnx(request.dynamic_batch)
        metadata = {**request.metadata, "runtime": "mnn", "verified_precision": PRECISION["verified"][0]}
        if request.precision != "int8":
            with sources.progress.step(f"Converting to MNN ({request.precision.upper()} weights)"):
                convert(onnx_path, request.path, metadata, fp16=request.precision == "fp16")
            return Exported(request.path, {})
        with tempfile.TemporaryDirectory(prefix="rmt-mnn-") as work:
            float_model = convert(onnx_path, Path(work) / "float.mnn", metadata)
            metadata = {**metadata, **INT8_WRONG_ON}
            with sources.progress.step(f"Calibrating INT8 with MNN's quantizer on {len(sources.calib)} images"):
                quantization = quantize(float_model, sources.calib, request.path, metadata,
                                        describe(float_model)["input_name"])
        return Exported(request.path, {"quantization": quantization, "wrong_on": INT8_WRONG_ON["wrong_on"]})

    def describe(self, path: Path) -> dict:
        return describe(path)

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> MNNRunner:
        return MNNRunner(path, threads, execution)

    def default_runner(self, path: Path, threads: int | None = None) -> MNNRunner | None:
        """At MNN's default precision (normal) where it computes differently: CPUs with FP16 arithmetic."""
        return MNNRunner(path, threads, "default") if _has_fp16_arithmetic() else None

    def render(self, entry: dict) -> list[str]:
        lines = [f"- MNN `{entry['path'] or 'removed'}`, verified by MNN's CPU runtime at precision high (FP32 float "
                 "layers)"]
        if entry.get("wrong_on"):
            lines.append(f"- **not exact everywhere:** {entry['wrong_on']}; on those CPUs ship `model.mnn` or the ONNX "
                         "file instead (`predict` and `bench` warn there)")
        return lines


TARGET = MNNTarget()
