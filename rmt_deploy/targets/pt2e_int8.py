"""What the targets whose INT8 comes from PyTorch's PT2E flow share (ExecuTorch, LiteRT): one
calibration per run, the accuracy-aware search over its layers, and ranking candidates in PyTorch.

A subclass sets ``quantizer`` (``quant.pt2e.QUANTIZERS``) and ``encoding`` (the deploy form it
calibrates) and writes a converted candidate with ``write_int8``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..quant.pt2e import STATISTICS, calibrate, convert, copy_graph, quantized_layers, revert_layers
from .base import Sources, Target
from .runner import Runner

__all__ = ["PT2ETarget", "Int8Candidate", "PT2ERunner", "INPUT_NAME"]

INPUT_NAME = "input"


@dataclass
class Int8Candidate:
    """One step of the accuracy-aware search: the calibrated graph with some layers reverted to float."""

    calibrated: object  # from ``calibrate``; ``revert_layers`` edits it
    size: tuple[int, int]
    outputs: tuple[str, ...]


class PT2ERunner(Runner):
    """A converted PT2E graph run by PyTorch eager: the int8 arithmetic XNNPACK runs, emulated with
    quantize/dequantize ops. For ranking layers only; verification uses the written artifact."""

    name, measures_latency = "pt2e eager (emulated int8)", False

    def __init__(self, graph_module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.graph_module, self.outputs = graph_module, outputs

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass

    def input_names(self) -> list[str]:
        return [INPUT_NAME]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.graph_module(torch.from_numpy(np.ascontiguousarray(next(iter(feeds.values())))))
        values = out if isinstance(out, (tuple, list)) else (out,)
        return {name: v.numpy() for name, v in zip(self.outputs, values)}


class PT2ETarget(Target):
    """A target calibrated by PT2E with ``quantizer`` on the deploy form in ``encoding``."""

    calibrated_int8, calibrator = True, "pt2e"  # not NNCF: the int8 extra is not needed
    statistics = tuple(STATISTICS)
    quantizer, encoding = "xnnpack", "xnnpack"

    def calibrated(self, sources: Sources):
        """(the calibrated PT2E graph, calibration seconds), once per run: export and the search share it."""
        def build():
            start = time.perf_counter()
            graph = calibrate(sources.deploy_form(self.encoding), (1, 3, *sources.size), sources.calib,
                              sources.statistic, sources.progress, self.quantizer)
            return graph, round(time.perf_counter() - start, 2)
        return sources.once((f"{self.quantizer} int8", sources.statistic), build)

    def write_int8(self, candidate: Int8Candidate, path: Path, metadata: dict[str, str]) -> None:
        raise NotImplementedError

    # -- accuracy-aware INT8 -----------------------------------------------------------------------------
    def revertible(self, path: Path, sources: Sources):
        from ..quant.accuracy_aware import Reverter

        candidate = Int8Candidate(copy_graph(self.calibrated(sources)[0]), sources.size,
                                  tuple(sources.deploy_form(self.encoding).output_names))
        reverter = Reverter(lambda c: quantized_layers(c.calibrated),
                            lambda c, names, _original: revert_layers(c.calibrated, names),
                            lambda c: Int8Candidate(copy_graph(c.calibrated), c.size, c.outputs))
        return candidate, None, reverter

    def save_model(self, model: Int8Candidate, path: Path, metadata: dict[str, str]) -> Path:
        self.write_int8(model, path, metadata)
        return path

    def candidate_runner(self, model: Int8Candidate, threads: int | None = None) -> Runner:
        """The candidate's quantize/dequantize graph run by PyTorch (XNNPACK's int8 arithmetic, emulated in
        float): writing an artifact per layer to rank them would take most of a minute each."""
        return PT2ERunner(convert(model.calibrated), model.outputs)
