"""CoreML target: deploy-form model → ML program .mlpackage (FP16, FP32 or INT8 weights).

Conversion and saving work on any OS; Core ML itself (``predict``) runs only on macOS. Elsewhere
the package is reloaded and its ops are evaluated with numpy (``coreml_mil``), which is what
verification uses there; latency needs a Mac.
"""
from __future__ import annotations

import contextlib
import io
import json
import platform
import time
from pathlib import Path

import numpy as np

from ..artifacts import artifact_bytes
from ..atomic import atomic_path
from ..errors import BackendUnavailable, UserInputError
from ..optional import install_hint
from ..quiet import quiet
from ..sizes import ENUMERATED_KEY, format_sizes
from .base import ExportRequest, Exported, Package, Sources, Target
from .formats import check_mlpackage
from .coreml_mil import tap_map
from .coreml_settings import MIN_TARGETS, CoreMLSettings
from .coreml_shapes import fp16_except_tables, input_shape
from .runner import Runner

__all__ = ["TARGET", "CoreMLTarget", "CoreMLSettings", "export", "describe", "inspect_graph", "require_coremltools", "MilNumpyRunner", "CoreMLRunner", "MIN_TARGETS",
           "COMPUTE_UNITS", "TENSOR_INPUT", "IMAGE_INPUT", "OUTPUT_NAME"]

TENSOR_INPUT, IMAGE_INPUT, OUTPUT_NAME = "input", "image", "logits"
COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "ALL")  # what `bench` times on macOS
_LOGGERS = ("coremltools",)


def require_coremltools():
    """Import coremltools quietly, or raise BackendUnavailable with the fix."""
    major_minor = tuple(int(p) for p in np.__version__.split(".")[:2])
    if major_minor >= (2, 4):
        raise BackendUnavailable(f"coremltools' converter breaks with numpy {np.__version__}; "
                                 'install numpy<2.4 (pip install "numpy<2.4")')
    try:
        with _silenced():
            import coremltools
    except ImportError as e:
        raise BackendUnavailable(f'coremltools is not installed ({e}); run: {install_hint("coreml")}') from None
    return coremltools


@contextlib.contextmanager
def _silenced():
    """coremltools logs missing macOS libraries at import and draws tqdm bars on stderr."""
    with quiet(*_LOGGERS), contextlib.redirect_stderr(io.StringIO()):
        yield


def _normalizing(model, mean, std):
    """0–1 RGB (what ImageType with scale 1/255 delivers) → the normalised tensor the model expects."""
    import torch

    class Normalize(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model((x - self.mean) * self.inv_std)

    return Normalize()


def export(model, path: Path, input_size: tuple[int, int], *, precision: str,
           metadata: dict[str, str], settings: CoreMLSettings, calibration: np.ndarray | None = None,
           sizes: list[tuple[int, int]] | None = None) -> Path:
    """Convert the deploy form to an ML program at ``path`` (.mlpackage, a folder).

    ``precision``: "fp16" (FP16 compute), "fp32", or "int8" (INT8 per-channel symmetric
    weights, FP16 compute; with ``settings.w8a8`` also INT8 activations calibrated on
    ``calibration`` through Core ML predict, macOS only). ``sizes``: the (H, W) a dynamic deploy
    form takes, as enumerated shapes (``coreml_shapes``); ``input_size`` is the default.
    """
    import torch

    from .onnx_export import output_names

    ct = require_coremltools()
    settings.check((precision,))
    mean, std = json.loads(metadata["mean"]), json.loads(metadata["std"])
    sizes = sizes or [input_size]
    shape = input_shape(ct, sizes, input_size)
    if settings.image_input:
        net = _normalizing(model, mean, std).eval()
        inputs = [ct.ImageType(name=IMAGE_INPUT, shape=shape, scale=1.0 / 255.0, bias=[0.0, 0.0, 0.0],
                               color_layout=ct.colorlayout.RGB)]
    else:
        net = model.eval()
        inputs = [ct.TensorType(name=TENSOR_INPUT, shape=shape, dtype=np.float32)]
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.zeros(1, 3, *input_size), check_trace=False)
    with _silenced():
        mlmodel = ct.convert(traced, inputs=inputs,
                             outputs=[ct.TensorType(name=name, dtype=np.float32) for name in output_names(model)],
                             convert_to="mlprogram",
                             compute_precision=_compute_precision(ct, precision, len(sizes) > 1),
                             minimum_deployment_target=getattr(ct.target, settings.min_target))
        metadata = {**metadata, **tap_map(mlmodel._mil_program, getattr(model, "cfg", None)),
                    **({ENUMERATED_KEY: format_sizes(sizes)} if len(sizes) > 1 else {})}
        if precision == "int8":
            if settings.w8a8:
                mlmodel = _quantize_activations(ct, mlmodel, calibration, settings)
            mlmodel = _quantize_weights(ct, mlmodel)
    _describe_model(mlmodel, {**metadata, "precision": precision}, settings, input_size, sizes)
    with atomic_path(path) as tmp, _silenced():  # the temp name keeps .mlpackage: Core ML insists on it
        mlmodel.save(str(tmp))
    return path


def _compute_precision(ct, precision: str, flexible: bool):
    if precision == "fp32":
        return ct.precision.FLOAT32
    return fp16_except_tables(ct) if flexible else ct.precision.FLOAT16


def _quantize_weights(ct, mlmodel):
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel"))
    return linear_quantize_weights(mlmodel, config)


def _quantize_activations(ct, mlmodel, calibration: np.ndarray | None, settings: CoreMLSettings):
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig
    from coremltools.optimize.coreml.experimental import linear_quantize_activations

    if calibration is None or not len(calibration):
        raise UserInputError("--w8a8 needs calibration images (--calib DIR)")
    name = IMAGE_INPUT if settings.image_input else TENSOR_INPUT
    samples = [{name: _feed_value(x[None], settings.image_input, None)} for x in calibration]
    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
    return linear_quantize_activations(mlmodel, config, samples)


def _describe_model(mlmodel, metadata: dict[str, str], settings: CoreMLSettings, size, sizes) -> None:
    """What Xcode shows: description, author, licence, version, input/output help, our metadata."""
    arch, backbone = metadata.get("arch", "RMT"), metadata.get("task") == "backbone"
    what = "backbone (feature maps)" if backbone else f"image classifier ({metadata['num_classes']} classes)"
    shown = f"HxW one of {format_sizes(sizes)}" if len(sizes) > 1 else f"{size[0]}x{size[1]}"
    mlmodel.short_description = (f"{arch} {what}, {shown}, "
                                 f"exported by rmt-deploy {metadata.get('rmt_deploy.version', '')}")
    mlmodel.author = "rmt-deploy"
    mlmodel.license = settings.license or metadata.get("license", "") or "unspecified"
    mlmodel.version = metadata.get("rmt_deploy.version", "")
    if settings.image_input:
        mlmodel.input_description[IMAGE_INPUT] = (f"RGB image, {shown} (HxW), resized and centre-cropped "
                                                  "like the training data; normalisation is built in")
    else:
        mlmodel.input_description[TENSOR_INPUT] = (f"float32 NCHW 1x3xHxW, {shown}, RGB normalised with "
                                                   f"mean {metadata['mean']} and std {metadata['std']}")
    if backbone:
        for out in json.loads(metadata["outputs"]):
            mlmodel.output_description[out["name"]] = (f"stage {out['stage']} features, stride {out['stride']}: "
                                                       f"1x{out['channels']}x{out['shape'][0]}x{out['shape'][1]}")
    else:
        mlmodel.output_description[OUTPUT_NAME] = "class logits (apply softmax for probabilities); labels in 'class_names'"
    extra = {**metadata, "input_kind": "image" if settings.image_input else "tensor",
             "min_target": settings.min_target}
    mlmodel.user_defined_metadata.update({k: str(v) for k, v in extra.items() if v is not None})


def describe(path: Path) -> dict:
    """What a runner needs to feed a package: input name/shape and metadata (no Core ML needed)."""
    check_mlpackage(Path(path))
    ct = require_coremltools()
    with _silenced():
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    feature = spec.description.input[0]
    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        shape = [1, 3, feature.type.imageType.height, feature.type.imageType.width]
    else:
        shape = list(feature.type.multiArrayType.shape)
    return {"input_name": feature.name, "input_shape": shape, "dynamic_batch": False,
            "image_input": kind == "imageType", "metadata": dict(spec.description.metadata.userDefined)}


def inspect_graph(path: Path) -> dict:
    """The Linux preflight of a saved package (see ``coreml_preflight``)."""
    from .coreml_mil import load_program
    from .coreml_preflight import preflight

    with _silenced():
        program = load_program(path)
    return {**preflight(program), "package_bytes": artifact_bytes(path)}


def _feed_value(x: np.ndarray, image_input: bool, info_metadata: dict | None):
    """A normalised NCHW batch of one → what the package's input takes (tensor, or 0–255 RGB)."""
    if not image_input:
        return x.astype(np.float32)
    mean, std = _mean_std(info_metadata)
    return np.clip((x * std + mean) * 255.0, 0.0, 255.0).astype(np.float32)


def _mean_std(metadata: dict | None):
    metadata = metadata or {}
    mean = np.asarray(json.loads(metadata.get("mean", "[0.485, 0.456, 0.406]")), np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(json.loads(metadata.get("std", "[0.229, 0.224, 0.225]")), np.float32).reshape(1, 3, 1, 1)
    return mean, std


class _PackageRunner(Runner):
    """Feeds normalised tensors to a package whatever its input kind (tensor or image)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.info: dict = {}

    def input_names(self) -> list[str]:
        return [TENSOR_INPUT]  # callers feed the normalised tensor; image packages get pixels

    def _pixels_or_tensor(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (x,) = feeds.values()
        return _feed_value(np.asarray(x, np.float32), self.info["image_input"], self.info["metadata"])


class MilNumpyRunner(_PackageRunner):
    """The ML program evaluated op by op with numpy: real numbers, no meaningful timing."""

    name = "coreml ML program evaluated with numpy (no Core ML on this OS)"
    device = "cpu (numpy reference)"
    measures_latency = False

    def activate_impl(self) -> None:
        from .coreml_mil import load_program

        self.info = describe(self.path)
        with _silenced():
            self.function = load_program(self.path).functions["main"]

    def deactivate_impl(self) -> None:
        self.function = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .coreml_mil import evaluate

        x = self._pixels_or_tensor(feeds)
        start = time.perf_counter()
        outputs = [evaluate(self.function, {self.info["input_name"]: x[i:i + 1]}) for i in range(len(x))]
        self.last_inference_s = time.perf_counter() - start
        return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


class MilTapsRunner(MilNumpyRunner):
    """The numpy evaluator also returning the named intermediate values (``rmt-deploy compare``)."""

    def __init__(self, path: Path, tensors: list[str]) -> None:
        super().__init__(path)
        self.tensors = list(tensors)

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .coreml_mil import evaluate

        x = self._pixels_or_tensor(feeds)
        rows = [evaluate(self.function, {self.info["input_name"]: x[i:i + 1]}, keep=self.tensors) for i in range(len(x))]
        return {name: np.concatenate([np.asarray(r[name], np.float32) for r in rows])
                for name in [OUTPUT_NAME, *self.tensors] if name in rows[0]}


class CoreMLRunner(_PackageRunner):
    """Core ML ``predict`` on macOS, on one compute unit setting."""

    device = "apple"

    def __init__(self, path: Path, compute_units: str = "ALL") -> None:
        super().__init__(path)
        if compute_units not in COMPUTE_UNITS:
            raise UserInputError(f"unknown compute unit {compute_units!r}; choose from {', '.join(COMPUTE_UNITS)}")
        self.compute_units = compute_units
        self.name = f"coreml {compute_units}"
        self.device = {"CPU_ONLY": "cpu", "CPU_AND_GPU": "cpu+gpu", "ALL": "cpu+gpu+ane"}[compute_units]

    def activate_impl(self) -> None:
        ct = require_coremltools()
        self.info = describe(self.path)
        self.model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, self.compute_units))

    def deactivate_impl(self) -> None:
        self.model = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self._pixels_or_tensor(feeds)
        rows = []
        start = time.perf_counter()
        for i in range(len(x)):  # packages have batch 1
            value = _to_image(x[i]) if self.info["image_input"] else x[i:i + 1]
            rows.append(self.model.predict({self.info["input_name"]: value}))
        self.last_inference_s = time.perf_counter() - start
        # Logits come back as a vector per image; feature maps keep their (1, C, H, W) shape.
        return {name: np.concatenate([np.asarray(r[name], np.float32).reshape(1, -1) if name == OUTPUT_NAME
                                      else np.asarray(r[name], np.float32) for r in rows]) for name in rows[0]}


def _to_image(chw: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.round(chw.transpose(1, 2, 0)).astype(np.uint8), mode="RGB")


def render_graph(entry: dict) -> list[str]:
    graph = entry["graph"]
    weights = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in graph["weight_bytes"].items())
    fp32 = ", ".join(f"{k} {v}" for k, v in graph["fp32_ops"].items()) or "none"
    return [f"- package `{entry['path']}`, preflight **{graph['status']}**"
            + (f" ({'; '.join(graph['problems'])})" if graph["problems"] else "")
            + f", max tensor rank {graph['max_rank']} (Core ML limit 5), "
            f"{graph['fp16_compute_fraction']:.1%} of ops compute in FP16 (FP32: {fp32}); weights: {weights}"]


class CoreMLTarget(Target):
    name, title, aliases, suffix = "coreml", "Core ML", ("mlpackage", "mlprogram"), ".mlpackage"
    precisions, default_precision = ("fp16", "fp32", "int8"), "fp16"
    extra, needs, dynamic_batch, dynamic_size = "coreml", "macos", False, True
    options_type = CoreMLSettings
    packages = (Package("coremltools", "coremltools", "Core ML target (.mlpackage; predict needs macOS)", "coreml"),)
    enumerated_sizes = True  # --dynamic: the verified sizes, enumerated in the package
    checked_by = "coreml numpy evaluator"

    def unavailable_reason(self) -> str | None:
        try:
            require_coremltools()
        except BackendUnavailable as e:
            return str(e)
        return None

    def needs_calibration(self, precision: str, options: CoreMLSettings | None) -> bool:
        return precision == "int8" and bool(options and options.w8a8)

    def runtimes(self, device: str | None = None) -> list[str]:
        """Compute units to time; none off macOS, where Core ML cannot run."""
        return list(COMPUTE_UNITS) if platform.system() == "Darwin" else []

    def no_runtime_reason(self) -> str:
        return "Core ML predict runs only on macOS; on this OS the package is checked by the numpy preflight"

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        precision, settings = request.precision, request.options or CoreMLSettings()
        what = {"fp16": "FP16", "fp32": "FP32",
                "int8": "INT8 weights + activations" if settings.w8a8 else "INT8 weights"}[precision]
        fields = {"coreml": {"min_target": settings.min_target, "input": "image" if settings.image_input else "tensor"}}
        if precision == "int8":
            fields["quantization"] = {"weights": "int8 linear symmetric, per output channel",
                                      "activations": "int8 (calibrated via predict)" if settings.w8a8 else "fp16",
                                      "calib_images": int(len(sources.calib)) if settings.w8a8 else None}
            request.metadata["quantization"] = "int8 weights (per-channel symmetric), fp16 compute"
        with sources.progress.step(f"Converting to CoreML {what} ML program ({settings.min_target}, batch 1)"):
            export(sources.deploy, request.path, sources.size, precision=precision, metadata=request.metadata,
                   settings=settings, calibration=sources.calib, sizes=sources.sizes)
        return Exported(request.path, fields)

    def inspect(self, path: Path) -> dict:
        return inspect_graph(path)

    def describe(self, path: Path) -> dict:
        return describe(path)

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> Runner:
        """Core ML on macOS (``runtime`` = compute units, default ALL); the numpy evaluator elsewhere."""
        if platform.system() == "Darwin":
            return CoreMLRunner(path, runtime or "ALL")
        return MilNumpyRunner(path)

    def load_taps(self, path: Path, tensors: list[str], threads: int | None = None) -> Runner:
        """The numpy evaluator on every OS: Core ML predict cannot return intermediate values."""
        return MilTapsRunner(path, tensors)

    def render(self, entry: dict) -> list[str]:
        return render_graph(entry) if entry.get("graph") else []


TARGET = CoreMLTarget()
