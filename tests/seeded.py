"""Seeded test values that are the same bits on every CPU: numpy only, so it also runs under qemu.

torch's seeded ``randn``/``rand`` run ISA-specific vectorised kernels, so one seed gives other
bits on an AVX2, an AVX-512 and an AMX machine; numpy's PCG64 and its float64 transforms are
scalar code, and casting to float32 rounds the same everywhere.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

__all__ = ["seeded_values", "values_digest"]


def seeded_values(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The test value of one state-dict entry: numpy only, a stream per (seed, key), float32."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    gen = np.random.Generator(np.random.PCG64([seed, key]))

    def normal(scale: float) -> np.ndarray:
        return gen.standard_normal(shape) * scale

    if name.endswith("running_var"):
        values = 0.5 + gen.random(shape)
    elif name.endswith("running_mean") or name.endswith(".bias"):
        values = normal(0.1)
    elif "gamma_" in name:
        values = 0.2 + 0.2 * gen.random(shape)
    elif len(shape) == 1:  # LayerNorm / BatchNorm weights
        values = 1.0 + normal(0.1)
    elif name.startswith(("head.", "aux_head.")):  # logits O(1-10), like a trained net
        values = normal(3.0 / shape[1] ** 0.5)
    elif len(shape) == 2:  # linears: the official init scale keeps the residual stream bounded
        values = normal(0.02)
    elif shape[1] == 1:  # depthwise convs sit on residual paths: keep them small
        values = normal(0.05)
    else:  # stem and merge convs
        values = normal(1.0 / math.prod(shape[1:]) ** 0.5)
    return values.astype(np.float32)


def values_digest(state: dict[str, np.ndarray]) -> str:
    """sha256 over keys in sorted order: each key's UTF-8 bytes, a NUL, the values as little-endian float32."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode() + b"\0" + np.ascontiguousarray(state[key], "<f4").tobytes())
    return h.hexdigest()


def normal(shape: tuple[int, ...], seed: int = 0):
    """A seeded standard-normal float32 torch tensor, the same bits on every CPU (test inputs)."""
    import torch

    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
