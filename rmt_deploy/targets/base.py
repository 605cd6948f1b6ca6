"""The target contract: what every backend module declares and does, and what it is given.

Each backend module (``onnx``, ``onnxruntime``, ``tensorrt``, ``coreml``, ``openvino``, ``executorch``,
``litert``, ``mnn``) defines one ``Target`` subclass and exposes an instance as ``TARGET``;
``targets.TARGETS`` is the table of them that the CLI, the export job, ``bench``, the report,
``doctor`` and the tests all read. A module imports its backend lazily, so the table costs nothing
to import.

The export job hands a target a ``Sources`` object (the deploy form, and graphs built from it
at most once per run) and an ``ExportRequest``; the target writes its artifact and says what
to verify in an ``Exported``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..artifacts import artifact_stem
from ..errors import BackendUnavailable
from .runner import Runner

__all__ = ["Target", "TargetOptions", "ExportRequest", "Exported", "Int8Graph", "Sources", "Package", "EXECUTIONS"]

CALIBRATORS = {"nncf": "NNCF", "pt2e": "PT2E"}  # shared calibrators, by Target.calibrator; others: the backend's own

# How a runner compiles an artifact: with the settings its numbers were verified with (recorded in
# the artifact), or with the runtime's own defaults. Only OpenVINO's differ (bf16 CPUs).
EXECUTIONS = ("verified", "default")


@dataclass(frozen=True)
class Package:
    """A Python package a target uses: ``doctor`` imports it, every report records its version."""

    module: str  # what to import
    dist: str  # the distribution that installs it (its version goes into the report)
    purpose: str  # doctor's "used for" column
    extra: str | None = None  # the rmt-deploy extra that installs it (None: a core dependency)


@dataclass(frozen=True)
class TargetOptions:
    """Base of a target's own options (CoreML's image input, TensorRT's --require-engine …).

    ``KEYS`` maps each preset key (the CLI flag without ``--``) to its field and accepted TOML
    types; ``FLAGS`` names the flags in errors.
    """

    KEYS: ClassVar[dict[str, tuple[str, tuple[type, ...]]]] = {}
    FLAGS: ClassVar[str] = ""

    def check(self, precisions: tuple[str, ...]) -> None:
        """Raise UserInputError for combinations that cannot work, before any work starts."""

    def is_default(self) -> bool:
        return self == type(self)()


@dataclass
class Int8Graph:
    """A calibrated INT8 model for one runtime and what the report and the artifact say about it."""

    model: Any  # onnx.ModelProto or openvino.Model
    float_model: Any  # the FP32 model it was calibrated from: float weights for reverted layers
    quantization: dict  # the report's ``quantization`` entry
    metadata: dict[str, str]  # artifact metadata: encoding, weight grid, where it is exact


class Sources(Protocol):
    """What targets export from; the export job builds each graph at most once per run."""

    deploy: Any  # the deploy-form torch module
    size: tuple[int, int]
    calib: Any  # calibration samples (N, 3, H, W) or None
    statistic: str  # --statistic: the activation range estimator INT8 calibration uses
    progress: Any  # step(description) / bar(description, total) / log(message)

    def deploy_form(self, encoding: str) -> Any: ...  # the deploy-form module in that encoding (rewrite.ENCODINGS)
    def once(self, key: Any, build: Any) -> Any: ...  # build(), at most once per run for key (targets' own caches)

    # FP32 deploy form, ONNX, no metadata; encoding "onnxruntime" = fused attention/rotary (rewrite.ENCODINGS)
    def deploy_onnx(self, dynamic: bool, encoding: str = "generic") -> Path: ...
    def fp16_onnx(self, dynamic: bool) -> Path: ...  # FP16 with FP32 inputs and outputs
    def int8_onnx(self, encoding: str) -> Int8Graph: ...  # 7-bit weights for CPUs, in that encoding
    def int8_qdq(self, label: str) -> Int8Graph: ...  # 8-bit weights, plain Q/DQ (TensorRT)
    def int8_openvino(self, label: str) -> Int8Graph: ...  # 7-bit weights, NNCF's OpenVINO backend
    def parity(self, runner: Runner, dynamic: bool) -> dict: ...  # logits vs PyTorch on the parity images
    dynamic_size: bool  # --dynamic: one graph for many sizes
    sizes: list[tuple[int, int]]  # the (H, W) verified: [size], or with --dynamic the range's ends too
    def parity_at_other_sizes(self, runner: Runner, dynamic: bool) -> list[dict]: ...  # --dynamic: the other sizes


@dataclass
class ExportRequest:
    precision: str
    path: Path  # where the artifact goes (inside the run's private folder)
    metadata: dict[str, str]  # what the artifact says about itself
    dynamic_batch: bool
    options: TargetOptions | None = None
    threads: int | None = None  # for runtimes a target runs while exporting (None: all cores)


@dataclass
class Exported:
    """What a target wrote: ``path`` is verified (None: nothing runnable here), ``shipped`` is
    what the report points at (default: ``path``), ``fields`` are target-specific report entries."""

    path: Path | None
    fields: dict = field(default_factory=dict)
    status: str = "ok"
    stage: str | None = None
    reason: str | None = None
    shipped: Path | None = None
    seconds: float | None = None  # the report's export_seconds when only part of export() is the export


class Target:
    """One backend. Subclasses set the declaration and implement ``export`` and ``load``."""

    name: str = ""
    aliases: tuple[str, ...] = ()
    suffix: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    default_precision: str = "fp32"  # written when no precision flag is given
    always_fp32: bool = False  # FP32 written on every run: the baseline other precisions compare to
    dynamic_batch: bool = True  # supports --dynamic-batch (otherwise batch 1)
    dynamic_size: bool = False  # supports --dynamic: height and width too (tables built in the graph)
    calibrated_int8: bool = False  # INT8 needs activation calibration on images
    calibrator: str = "nncf"  # what calibrates it: "nncf" (the int8 extra) or the backend's own flow
    statistics: tuple[str, ...] | None = None  # --statistic values its calibrator has (None: all)
    extra: str | None = None  # pip extra that installs the backend
    needs: str | None = None  # hardware the runtime needs ("nvidia-gpu", "macos"), for docs and skips
    options_type: type[TargetOptions] | None = None
    gates_accuracy: bool = True  # --max-drop applies to its INT8 artifact here
    title: str = ""  # how help panels and messages name it ("Core ML")
    summary: str = ""  # what --target's help says of it, when its title does not ("standard")
    packages: tuple[Package, ...] = ()  # beyond the core ones (targets.CORE_PACKAGES): doctor, report environment
    enumerated_sizes: bool = False  # one artifact takes a list of sizes only (Core ML), not any size in a range
    isolates_int8: bool = False  # `compare --isolate` can quantize one block at a time in its INT8 graph
    checked_by: str = ""  # what computes its outputs in `compare` (default: its title)

    def __repr__(self) -> str:
        return f"<target {self.name}>"

    @property
    def calibrator_title(self) -> str:
        """Who calibrates its INT8, as help texts say it ("NNCF", "MNN's own quantizer")."""
        return CALIBRATORS.get(self.calibrator) or f"{self.title}'s own quantizer"

    # -- what this machine can do --------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """Why this target cannot export here (a missing package), or None."""
        return None

    def require(self, options: TargetOptions | None, precisions: tuple[str, ...]) -> None:
        """Fail before any work when the export cannot happen here (raises BackendUnavailable)."""
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)

    def runtimes(self, device: str | None = None) -> list[str]:
        """Runtimes (providers, devices, compute units) that can run artifacts here, fastest first."""
        return []

    def accepts_runtime(self, runtime: str) -> bool:
        """Whether ``load(..., runtime=runtime)`` names something that exists here."""
        return runtime in self.runtimes()

    def no_runtime_reason(self) -> str:
        """Why ``runtimes()`` is empty on this machine."""
        return f"no {self.title or self.name} runtime on this machine"

    def runtime_error(self, path: Path, runtime: str) -> str:
        """The one-line refusal when ``load(path, runtime=runtime)`` names a runtime this target lacks."""
        here = self.runtimes()
        return (f"runtime {runtime!r} is not available for {self.title} here; choose from "
                f"{', '.join(here) or 'none (' + self.no_runtime_reason() + ')'}")

    def machine_facts(self) -> dict:
        """What ``doctor`` shows about this machine for this target (ONNX Runtime's providers …)."""
        return {}

    # -- export ------------------------------------------------------------------------------
    def precisions_for(self, asked: tuple[str, ...]) -> tuple[str, ...]:
        if self.always_fp32:
            return ("fp32",) + tuple(p for p in asked if p != "fp32")
        return asked or (self.default_precision,)

    def needs_calibration(self, precision: str, options: TargetOptions | None) -> bool:
        return precision == "int8" and self.calibrated_int8

    def default_options(self) -> TargetOptions | None:
        return self.options_type() if self.options_type else None

    def artifact_path(self, folder: Path, precision: str) -> Path:
        return folder / f"{artifact_stem(precision)}{self.suffix}"

    def leftovers(self, folder: Path, precision: str) -> list[Path]:
        """Files a failed export of ``precision`` may have left in ``folder``."""
        return list(folder.glob(f"{artifact_stem(precision)}{self.suffix}*"))

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        raise NotImplementedError

    def finalize(self, folder: Path, entries: list[dict]) -> None:
        """After every artifact of the run (e.g. TensorRT's build_engine.sh)."""

    # -- reading and running artifacts --------------------------------------------------
    def inspect(self, path: Path) -> dict | None:
        """Structure facts for the report; a ``problems`` list fails the artifact (preflight)."""
        return None

    def describe(self, path: Path) -> dict:
        """input_name, input_shape, dynamic_batch and the artifact's metadata."""
        raise NotImplementedError

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> Runner:
        """A runner for ``path``; ``execution`` is one of ``EXECUTIONS`` (only OpenVINO tells them apart)."""
        raise NotImplementedError

    def check_runner(self, path: Path, threads: int | None = None) -> Runner | None:
        """A runner that computes what ``load``'s does in less memory, for checking values and not
        timing them (ONNX Runtime without its memory pattern); None where ``load``'s is already lean."""
        return None

    def default_runner(self, path: Path, threads: int | None = None) -> Runner | None:
        """A runner at the runtime's own default settings where, on this machine, they compute
        differently from the verified ones (the export records both); None where they do not."""
        return None

    def load_taps(self, path: Path, tensors: list[str], threads: int | None = None) -> Runner:
        """A runner over a copy of ``path`` whose ``infer`` also returns the named intermediate
        tensors (from the artifact's tap map, ``rewrite.taps``), for ``rmt-deploy compare``.
        The artifact on disk is not changed. Raises BackendUnavailable where it cannot be done."""
        raise BackendUnavailable(self.no_taps_reason)

    no_taps_reason: str = "this target cannot expose intermediate tensors"

    # -- accuracy-aware INT8 ------------------------------------------------------------
    def revertible(self, path: Path, sources: Sources):
        """(INT8 model as written, the FP32 model it came from, its Reverter) for targets whose
        int8 layers can go back to float one at a time; None for the others."""
        return None

    def save_model(self, model, path: Path, metadata: dict[str, str]) -> Path:
        raise NotImplementedError(f"{self.name} cannot save an in-memory model")

    def candidate_runner(self, model, threads: int | None = None) -> Runner | None:
        """A runner over an in-memory INT8 candidate for ranking layers, where saving and loading
        each one is slow (ExecuTorch: lowering); None: the search saves and loads every candidate."""
        return None

    def int8_weight_grid(self, path: Path) -> dict | None:
        """For INT8 artifacts run by a CPU's int8 kernels (ONNX Runtime, OpenVINO): the weight grid
        read back from the file (``saturating_layers``: saturate on x86 without VNNI); None elsewhere."""
        return None

    # -- report -----------------------------------------------------------------------------
    def render(self, entry: dict) -> list[str]:
        """report.md lines about this target's own graph, preflight or readiness."""
        return []
