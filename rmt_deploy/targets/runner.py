"""Backend-agnostic runner protocol: activate → infer(dict of arrays) → deactivate."""
from __future__ import annotations

import numpy as np

__all__ = ["Runner"]


class Runner:
    """Template for backend runners; subclasses implement the ``*_impl`` methods.

    ``infer`` takes and returns dicts of named numpy arrays and records the time spent in
    the backend call only (``last_inference_s``), so latency excludes Python glue.
    """

    name = "runner"
    device = "cpu"  # what the backend runs on, for reports
    measures_latency = True  # False for reference evaluators whose timing means nothing

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_s = 0.0
        # Where one artifact can run on more than one compiled model (OpenVINO's static copy of a
        # dynamic IR): which one ran the last call, recorded beside its latency. None: the only one.
        self.last_model: str | None = None

    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: call activate() (or use 'with') before infer()")
        return self.infer_impl(feeds)

    def input_names(self) -> list[str]:
        raise NotImplementedError

    def execution(self) -> dict | None:
        """What the device really ran (inference precision, layers by precision) where the backend
        can say; None where it cannot."""
        return None

    def throughput(self, feeds: dict[str, np.ndarray], seconds: float) -> dict | None:
        """Images per second from parallel asynchronous requests, for backends that have them;
        None for those that run one request at a time."""
        return None

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate_impl(self) -> None:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError
