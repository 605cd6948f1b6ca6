"""Latency statistics of repeated calls."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["measure", "summarize"]


def summarize(samples_s: list[float]) -> dict:
    """p50/p90/p99/mean/std in milliseconds, plus the count."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p90": round(float(np.percentile(ms, 90)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "mean": round(float(ms.mean()), 3),
        "std": round(float(ms.std()), 3),
        "iterations": int(ms.size),
    }


def measure(call: Callable[[], float | None], warmup: int, iterations: int) -> dict:
    """Time ``call`` ``iterations`` times after ``warmup`` calls.

    ``call`` may return the seconds spent in the backend itself (a runner's
    ``last_inference_s``); otherwise wall time around the call is used.
    """
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        inner = call()
        samples.append(inner if inner else time.perf_counter() - start)
    return {**summarize(samples), "warmup": warmup}
