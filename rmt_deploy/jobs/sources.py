"""What targets export from, each built at most once per run (``targets.base.Sources``).

``--target onnx,trt,openvino --fp16 --int8`` exports the deploy form once per batch mode and
encoding, the FP16 graph once, and calibrates once per weight grid and encoding (7-bit for CPUs,
8-bit for TensorRT) plus once for OpenVINO; every target copies what it needs and adds its own metadata.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..bench.evaluate import runner_logits, runner_outputs
from ..bench.parity import compare_features, compare_logits
from ..errors import VerificationError
from ..quant import checks, openvino_int8
from ..quant.policy import EXACT_ON, PAIR_SAFE_WEIGHT, WEIGHT_RANGES, QuantPolicy
from ..rewrite import to_deploy
from ..targets import Int8Graph
from ..targets.onnx_export import export, export_for_calibration, export_fp16
from .plan import ExportOptions
from .prepare import Prepared

__all__ = ["ExportSources", "CPU_WEIGHT_RANGE"]

# INT8 for CPU runtimes (ONNX Runtime, OpenVINO) uses the 7-bit weight grid: exact on every CPU an
# artifact may land on, and measured as fast as 8-bit on VNNI (docs/int8.md, "INT8 on every CPU").
CPU_WEIGHT_RANGE = "portable"


class ExportSources:
    """The shared graphs of one export run, built lazily into ``scratch``."""

    def __init__(self, opts: ExportOptions, prepared: Prepared, scratch: Path, progress) -> None:
        self.opts, self.prepared, self.scratch, self.progress = opts, prepared, scratch, progress
        self.deploy, self.size, self.calib = prepared.deploy, prepared.size, prepared.calib
        self.statistic = opts.statistic
        self.dynamic_size = prepared.size_range is not None  # one graph for many sizes (--dynamic)
        self.sizes = prepared.verified_sizes  # [size], or with --dynamic every size it is checked at
        self._cache: dict = {}

    def once(self, key, build):
        """``build()``, at most once per run for ``key``; targets cache their own graphs here too."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _scratch(self, name: str) -> Path:
        self.scratch.mkdir(exist_ok=True)
        return self.scratch / name

    # -- float graphs ---------------------------------------------------------------------
    def deploy_form(self, encoding: str):
        """The deploy-form module in ``encoding`` (``rewrite.ENCODINGS``); ``deploy`` is the generic one."""
        if encoding == "generic":
            return self.deploy
        size_range = self.prepared.size_range
        return self.once(("form", encoding), lambda: to_deploy(self.prepared.loaded.model, self.size,
                                                                encoding=encoding, dynamic=self.dynamic_size,
                                                                largest=size_range.largest if size_range else None))

    def _mode(self, dynamic: bool) -> str:
        """What a graph's input takes. A dynamic size implies a dynamic batch (``export`` makes the batch
        dynamic whenever it has a size range), so under ``--dynamic`` both callers share one graph."""
        return "dynamic size" if self.dynamic_size else "dynamic batch" if dynamic else "fixed"

    def deploy_onnx(self, dynamic: bool, encoding: str = "generic") -> Path:
        mode = self._mode(dynamic)

        def build() -> Path:
            deploy = self.deploy_form(encoding)
            with self.progress.step(f"Exporting the deploy form to ONNX ({encoding} encoding, {mode})"):
                return export(deploy, self._scratch(f"deploy_{encoding}_{mode}.onnx"), self.size,
                              dynamic_batch=dynamic, metadata={}, size_range=self.prepared.size_range)
        return self.once(("fp32", encoding, mode), build)

    def fp16_onnx(self, dynamic: bool) -> Path:
        mode = self._mode(dynamic)

        def build() -> Path:
            with self.progress.step(f"Exporting the deploy form to FP16 ONNX ({mode})"):
                return export_fp16(self.deploy, self._scratch(f"deploy_fp16_{mode}.onnx"), self.size,
                                   dynamic_batch=dynamic, metadata={}, size_range=self.prepared.size_range)
        return self.once(("fp16", mode), build)

    # -- INT8 -------------------------------------------------------------------------------
    def policy(self, weight_range: str = CPU_WEIGHT_RANGE) -> QuantPolicy:
        return QuantPolicy(self.opts.statistic, calib_size=self.opts.calib_size, weight_range=weight_range)

    def _calibrated(self, weight_range: str, encoding: str):
        """One NNCF calibration per weight grid, each from the FP32 token-layout graph in the encoding
        its runtime reads (``rewrite.ENCODINGS``)."""
        from ..quant.int8 import calibrate_int8

        def build():
            bits = WEIGHT_RANGES[weight_range]
            graph = export_for_calibration(self.prepared.loaded.model, self.size,
                                           dynamic_batch=self.opts.dynamic_batch, encoding=encoding,
                                           size_range=self.prepared.size_range)
            with self.progress.step(f"Calibrating INT8 ({bits}-bit weights) with NNCF on {len(self.calib)} images"):
                return calibrate_int8(graph, self.calib, self.policy(weight_range))
        return self.once(("int8", weight_range, encoding), build)

    def int8_onnx(self, encoding: str) -> Int8Graph:
        """CPU INT8 (7-bit weights) for ONNX files: Q/DQ re-encoded for ONNX Runtime's int8 kernels
        (``quant.encode.for_onnxruntime``, standard ops) over the deploy form in ``encoding``:
        "generic" for the standard model_int8.onnx, "onnxruntime" for model_int8.ort.onnx."""
        int8 = self._calibrated(CPU_WEIGHT_RANGE, encoding)
        name = "standard q/dq" if encoding == "generic" else "onnxruntime encoding"
        return Int8Graph(int8.onnxruntime, int8.float_model,
                         self._quantization(encoding, int8.calib_seconds, checks.weight_grid(int8.onnxruntime),
                                            len(int8.float_for_speed)),
                         self._metadata(f"int8 {name}", CPU_WEIGHT_RANGE))

    def int8_qdq(self, label: str) -> Int8Graph:
        """Full 8-bit Q/DQ for GPUs; ``label``: the report's ``quantization.encoding`` (the asking target)."""
        int8 = self._calibrated("full", "generic")  # GPUs accumulate in int32; TensorRT wants the full grid
        return Int8Graph(int8.qdq, int8.float_model,
                         self._quantization(label, int8.calib_seconds, checks.weight_grid(int8.qdq),
                                            weight_range="full"),
                         self._metadata("int8 tensorrt q/dq", "full"))

    def int8_openvino(self, label: str) -> Int8Graph:
        """NNCF's OpenVINO backend, 7-bit weights; ``label`` as for ``int8_qdq``."""
        def build():
            from ..quant.calibrate import quantize_openvino
            from ..targets.openvino import convert

            float_model = convert(self.deploy_onnx(self.opts.dynamic_batch))
            with self.progress.step(f"Calibrating OpenVINO INT8 with NNCF on {len(self.calib)} images"):
                start = time.perf_counter()
                model = quantize_openvino(float_model.clone(), self.calib, self.policy())  # float_model: revert source
            return model, float_model, round(time.perf_counter() - start, 2)

        model, float_model, seconds = self.once("openvino int8", build)
        return Int8Graph(model, float_model,
                         self._quantization(label, seconds, openvino_int8.weight_grid(model)),
                         self._metadata("int8 (NNCF OpenVINO backend)", CPU_WEIGHT_RANGE))

    def _quantization(self, encoding: str, calib_seconds: float, grid: dict, float_for_speed: int = 0,
                      weight_range: str = CPU_WEIGHT_RANGE) -> dict:
        """The report's ``quantization`` entry: the policy, the calibration, this encoding and the
        weight grid read back from the graph. A CPU-bound graph off the 7-bit grid raises: it
        would compute wrong results on x86 CPUs without VNNI."""
        if weight_range == "portable" and grid["saturating_layers"]:
            raise VerificationError(f"{len(grid['saturating_layers'])} int8 layers have weights beyond "
                                    f"±{PAIR_SAFE_WEIGHT} (first: {grid['saturating_layers'][0]}); they would "
                                    "saturate on x86 CPUs without VNNI")
        return {**self.policy(weight_range).to_dict(), "calib_images": int(len(self.calib)),
                "calib_seconds": calib_seconds, "encoding": encoding, "float_for_speed": float_for_speed,
                "max_abs_weight": grid["max_abs"]}

    def _metadata(self, encoding: str, weight_range: str) -> dict[str, str]:
        """What an INT8 artifact says about itself: how it was calibrated and where it is exact."""
        policy = self.policy(weight_range)
        return {"quantization": f"{encoding}; {len(self.calib)} calibration images, statistic {policy.statistic}",
                "int8_weight_bits": str(policy.weight_bits), "int8_exact_on": EXACT_ON[weight_range]}

    # -- checks -------------------------------------------------------------------------------
    def parity(self, runner, dynamic: bool) -> dict:
        """Logits vs PyTorch; for a backbone each feature map, worst first (``compare_features``)."""
        ref, got = self.prepared.ref_parity, self.parity_outputs(runner, dynamic)
        return compare_features(ref, got) if isinstance(ref, dict) else compare_logits(ref, got)

    def parity_at_other_sizes(self, runner, dynamic: bool) -> list[dict]:
        """A dynamic artifact's parity at each other size it is checked at: {"size": [h, w], ...parity}."""
        found = []
        for size, x, ref in self.prepared.other_sizes:
            got = (runner_outputs(runner, x, dynamic, self.deploy.cfg) if isinstance(ref, dict)
                   else self.logits(runner, x, dynamic))
            found.append({"size": list(size), **(compare_features(ref, got) if isinstance(ref, dict)
                                                 else compare_logits(ref, got))})
        return found

    def worst_cosine(self, runner, dynamic: bool) -> float:
        """The worst image cosine on the parity images at every verified size (``--min-cosine`` holds it)."""
        return min([self.parity(runner, dynamic)["cosine"]] +
                   [p["cosine"] for p in self.parity_at_other_sizes(runner, dynamic)])

    def outputs_at_every_size(self, runner, dynamic: bool) -> list:
        """``parity_outputs`` at the verified size, then on the same images at each other verified size."""
        found = [self.parity_outputs(runner, dynamic)]
        for _, x, ref in self.prepared.other_sizes:
            found.append(runner_outputs(runner, x, dynamic, self.deploy.cfg) if isinstance(ref, dict)
                         else self.logits(runner, x, dynamic))
        return found

    def parity_outputs(self, runner, dynamic: bool):
        """What ``runner`` computes on the parity images: logits, or {name: feature map} for a backbone."""
        x = self.prepared.x_parity
        if isinstance(self.prepared.ref_parity, dict):
            return runner_outputs(runner, x, dynamic, self.deploy.cfg)
        return self.logits(runner, x, dynamic)

    def logits(self, runner, x: np.ndarray, dynamic: bool) -> np.ndarray:
        return runner_logits(runner, x, dynamic, self.deploy.cfg)
