"""ExecuTorch target: the deploy form as a ``.pte`` program for PyTorch's on-device runtime (Android,
iOS, embedded Linux), run here by ExecuTorch's own Python runtime.

The program comes from the deploy form in its ExecuTorch encoding (``rewrite.xnnpack``): written so
that XNNPACK's partitioner takes every op, the whole network is one XNNPACK delegate call (the
report counts delegated and portable nodes). INT8 goes through PyTorch's PT2E flow with the XNNPACK
quantizer, limited to our policy's layers (conv and linear inputs, weights and, as XNNPACK's int8
kernels write int8, outputs; attention matmuls, softmax, LayerNorm and GELU stay float), per-channel symmetric weights in [-127, 127], calibrated on
the same images as the other targets (``quant.pt2e``, which also says where that INT8 is exact).

Metadata travels inside the program as a constant method (``META_METHOD``) returning JSON.
``--delegate vulkan|coreml`` lowers for Android GPUs / Apple devices: those programs are written and
not run here (the pip runtime has neither backend).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..atomic import atomic_path
from ..cpu import usable_cores
from ..errors import BackendUnavailable, UserInputError
from ..optional import install_hint
from ..quiet import quiet
from ..quant.pt2e import EXACT_ON, convert, example_input, max_abs_weight
from .base import ExportRequest, Exported, Package, Sources, TargetOptions
from .formats import check_pte
from .pt2e_int8 import INPUT_NAME, Int8Candidate, PT2ERunner, PT2ETarget
from .runner import Runner

__all__ = ["TARGET", "ExecuTorchTarget", "ExecuTorchOptions", "ExecuTorchRunner", "PT2ERunner", "DELEGATES",
           "META_METHOD", "lower", "describe", "inspect_program"]

DELEGATES = {"xnnpack": "XnnpackBackend", "vulkan": "VulkanBackend", "coreml": "CoreMLBackend"}
RUNS_HERE = ("xnnpack",)  # the pip runtime's backends on this OS
META_METHOD = "get_meta_json"

@dataclass(frozen=True)
class ExecuTorchOptions(TargetOptions):
    """What ``export --target executorch`` accepts beyond the shared options."""

    KEYS: ClassVar = {"delegate": ("delegate", (str,))}
    FLAGS: ClassVar = "--delegate"

    delegate: str = "xnnpack"

    def check(self, precisions: tuple[str, ...]) -> None:
        if self.delegate not in DELEGATES:
            raise UserInputError(f"--delegate {self.delegate!r} is unknown; choose from {', '.join(DELEGATES)}")
        if self.delegate != "xnnpack" and "int8" in precisions:
            raise UserInputError(f"--delegate {self.delegate} writes FP32 programs; INT8 here is XNNPACK's "
                                 "(drop --int8 or use --delegate xnnpack)")


@contextlib.contextmanager
def _native_quiet():
    """Silence what ExecuTorch's and torchao's native code prints on stderr (cpuinfo probes,
    threadpool notes, optional CUDA kernels); kept with RMT_DEPLOY_DEBUG."""
    if os.environ.get("RMT_DEPLOY_DEBUG"):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _executorch():
    try:
        with _native_quiet():
            import executorch.exir
            import executorch.runtime  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(f'executorch is not installed ({e}); run: {install_hint("executorch")}') \
            from None
    return executorch


def _partitioner(delegate: str):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    if delegate == "vulkan":
        from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

        return VulkanPartitioner()
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    return CoreMLPartitioner()


def lower(module, shape: tuple[int, ...], delegate: str, metadata: dict[str, str]) -> tuple[bytes, dict]:
    """(the .pte program, its delegation counts) for ``module`` taking one input of ``shape``."""
    import torch

    _executorch()
    from executorch.exir import to_edge_transform_and_lower

    # Python-level silence only: the progress spinner (on stderr) keeps turning through a minute of lowering.
    with torch.no_grad(), quiet("torch", "executorch"):
        program = torch.export.export(module, example_input(shape))
        edge = to_edge_transform_and_lower(program, partitioner=[_partitioner(delegate)],
                                           constant_methods={META_METHOD: json.dumps(metadata)})
        delegation = _delegation(edge.exported_program().graph_module)
        return edge.to_executorch().buffer, delegation


def _delegation(graph_module) -> dict:
    """How much of the graph the delegate took: node counts and the ops left to portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    left = Counter()
    for name, counts in info.delegation_by_operator.items():
        if counts.non_delegated and name != "getitem":  # getitem only unpacks a delegate's outputs
            left[name] += counts.non_delegated
    delegated = info.num_delegated_nodes
    compute = delegated + sum(left.values())
    return {"delegate_calls": info.num_delegated_subgraphs, "delegated_nodes": delegated,
            "portable_ops": dict(left), "delegated_share": round(delegated / compute, 4) if compute else 0.0}


def _read_program(path: Path):
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(Path(path).read_bytes())
    return getattr(program, "program", program)


def inspect_program(path: Path) -> dict:
    """Delegates and portable operators the program holds, from the file itself."""
    forward = next(p for p in _read_program(path).execution_plan if p.name == "forward")
    return {"delegates": sorted({d.id for d in forward.delegates}), "delegate_calls": len(forward.delegates),
            "portable_operators": sorted({op.name for op in forward.operators})}


def _metadata(program) -> dict[str, str]:
    if META_METHOD not in program.method_names:
        return {}
    return json.loads(program.load_method(META_METHOD).execute([])[0])


def describe(path: Path) -> dict:
    """What a runner needs to feed a program: input name and shape (batch fixed), its metadata."""
    check_pte(Path(path))  # before the native loader, which aborts the process on some bad headers
    with _native_quiet():
        program = _executorch().runtime.Runtime.get().load_program(Path(path))
        sizes = list(program.metadata("forward").input_tensor_meta(0).sizes())
        metadata = _metadata(program)
    return {"input_name": INPUT_NAME, "input_shape": sizes, "dynamic_batch": False, "metadata": metadata}


class ExecuTorchRunner(Runner):
    """ExecuTorch's Python runtime (the same C++ runtime and XNNPACK kernels a phone app links)."""

    name = "executorch xnnpack"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        self.path, self.threads = Path(path), threads
        self.method = self.outputs = None

    def activate_impl(self) -> None:
        executorch = _executorch()
        with _native_quiet():
            program = executorch.runtime.Runtime.get().load_program(self.path)
            metadata = _metadata(program)
            delegate = metadata.get("delegate", "xnnpack")
            if delegate not in RUNS_HERE:
                raise UserInputError(f"{self.path.name} is lowered to ExecuTorch's {delegate} backend, which this "
                                     f"runtime does not have; run it on the device (here: --delegate xnnpack programs)")
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            # One process-wide pool: set it on every load, or the last runner's count would stay.
            _unsafe_reset_threadpool(self.threads or usable_cores())
            self.shape = tuple(program.metadata("forward").input_tensor_meta(0).sizes())
            self.method = program.load_method("forward")
        self.outputs = json.loads(metadata.get("output_names", '["logits"]'))

    def deactivate_impl(self) -> None:
        self.method = None

    def input_names(self) -> list[str]:
        return [INPUT_NAME]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = np.ascontiguousarray(next(iter(feeds.values())), dtype=np.float32)
        if x.shape != self.shape:
            raise UserInputError(f"{self.path.name} takes input of shape {self.shape}, got {x.shape}")
        tensor = torch.from_numpy(x)
        with _native_quiet():
            start = time.perf_counter()
            values = self.method.execute([tensor])
            self.last_inference_s = time.perf_counter() - start
        return {name: value.numpy().copy() for name, value in zip(self.outputs, values)}


def render_graph(entry: dict) -> list[str]:
    delegation = entry.get("delegation")
    if not delegation:
        return []
    left = ", ".join(f"{k} {v}" for k, v in delegation["portable_ops"].items()) or "none"
    header = [] if entry.get("graph") else [f"### {entry['target']} / {entry['precision']} program", ""]
    return header + [f"- program `{entry['path'] or 'removed'}`: {delegation['delegated_share']:.0%} of compute nodes in "
            f"{delegation['delegate_calls']} {entry.get('delegate', 'xnnpack')} delegate call(s); left to portable "
            f"kernels: {left}"] + ([] if entry.get("graph") else [""])


class ExecuTorchTarget(PT2ETarget):
    name, title, aliases, suffix = "executorch", "ExecuTorch", ("pte", "et"), ".pte"
    precisions, default_precision = ("fp32", "int8"), "fp32"
    extra, dynamic_batch = "executorch", False
    quantizer, encoding = "xnnpack", "xnnpack"  # INT8: PT2E with XNNPACK's quantizer
    options_type = ExecuTorchOptions
    packages = (Package("executorch", "executorch", "ExecuTorch target (.pte, XNNPACK runtime)", "executorch"),)
    no_taps_reason = ("an ExecuTorch program runs as one XNNPACK delegate call: intermediate tensors inside it "
                      "cannot be read (ETDump sees delegate calls only); compare the ONNX or OpenVINO artifact")

    def unavailable_reason(self) -> str | None:
        try:
            _executorch()
        except BackendUnavailable as e:
            return str(e)
        return None

    def require(self, options: TargetOptions | None, precisions: tuple[str, ...]) -> None:
        super().require(options, precisions)
        if options is not None and options.delegate == "coreml":
            from ..optional import require

            require("coremltools", "coreml")  # the Core ML partitioner converts with it

    def runtimes(self, device: str | None = None) -> list[str]:
        return ["xnnpack"] if self.unavailable_reason() is None else []

    def no_runtime_reason(self) -> str:
        return self.unavailable_reason() or "only XNNPACK programs run here (ExecuTorch's pip runtime)"

    def export(self, sources: Sources, request: ExportRequest) -> Exported:
        options = request.options or ExecuTorchOptions()
        delegate = options.delegate
        module = sources.deploy_form(self.encoding)
        # In place: the accuracy-aware search saves its candidates with this metadata.
        request.metadata.update(delegate=delegate, output_names=json.dumps(list(module.output_names)))
        fields: dict = {"delegate": delegate}
        if request.precision == "int8":
            calibrated, seconds = self.calibrated(sources)
            module = convert(calibrated)
            fields["quantization"] = {
                "encoding": self.encoding, "calibrator": "pt2e (XNNPACKQuantizer)", "statistic": sources.statistic,
                "calib_images": int(len(sources.calib)), "calib_seconds": seconds, "float_for_speed": 0,
                "weights": "int8 symmetric per output channel", "weight_bits": 8,
                "max_abs_weight": max_abs_weight(module), "activations": "int8 per tensor (asymmetric)",
                "quantized_ops": ["conv", "linear"], "exact_on": EXACT_ON}
            request.metadata.update(quantization=f"int8 pt2e xnnpack; {len(sources.calib)} calibration images, "
                                                 f"statistic {sources.statistic}",
                                    int8_weight_bits="8", int8_exact_on=EXACT_ON)
        with sources.progress.step(f"Lowering to ExecuTorch ({delegate}, {request.precision.upper()})"):
            fields["delegation"] = self._write(module, request.path, request.metadata, sources.size, delegate)
        if delegate not in RUNS_HERE:
            return Exported(None, fields, "skipped", reason=f"not run here: ExecuTorch's {delegate} backend needs "
                            f"{'an Android GPU (Vulkan)' if delegate == 'vulkan' else 'an Apple device'}",
                            shipped=request.path)
        return Exported(request.path, fields)

    @staticmethod
    def _write(module, path: Path, metadata: dict[str, str], size: tuple[int, int], delegate: str) -> dict:
        program, delegation = lower(module, (1, 3, *size), delegate, metadata)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(program)
        return delegation

    def write_int8(self, candidate: Int8Candidate, path: Path, metadata: dict[str, str]) -> None:
        self._write(convert(candidate.calibrated), path, metadata, candidate.size, metadata.get("delegate", "xnnpack"))

    def inspect(self, path: Path) -> dict:
        return inspect_program(path)

    def describe(self, path: Path) -> dict:
        return describe(path)

    def load(self, path: Path, threads: int | None = None, runtime: str | None = None,
             hint: str = "latency", execution: str = "verified") -> ExecuTorchRunner:
        return ExecuTorchRunner(path, threads)

    def render(self, entry: dict) -> list[str]:
        return render_graph(entry)


TARGET = ExecuTorchTarget()
