"""Latency statistics of repeated calls."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["measure", "summarize", "NOISY_CV"]

NOISY_CV = 0.10  # std/mean above this: the machine was busy; compare runs with care


def summarize(samples_s: list[float]) -> dict:
    """p50/p90/p99/mean/std in milliseconds, the count, and the coefficient of variation."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    mean = float(ms.mean())
    cv = float(ms.std() / mean) if mean > 0 else 0.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p90": round(float(np.percentile(ms, 90)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "mean": round(mean, 3),
        "std": round(float(ms.std()), 3),
        "cv": round(cv, 4),
        "noisy": cv > NOISY_CV,
        "iterations": int(ms.size),
    }


def measure(call: Callable[[], float | None], warmup: int, min_iters: int, min_seconds: float = 0.0) -> dict:
    """Time ``call`` after ``warmup`` calls until both ``min_iters`` runs and ``min_seconds`` passed.

    ``call`` may return the seconds spent in the backend itself (a runner's
    ``last_inference_s``); otherwise wall time around the call is used.
    """
    for _ in range(warmup):
        call()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < min_iters or time.perf_counter() - started < min_seconds:
        start = time.perf_counter()
        inner = call()
        samples.append(inner if inner else time.perf_counter() - start)
    return {**summarize(samples), "warmup": warmup}
