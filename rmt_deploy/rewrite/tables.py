"""Decay and rotary tables computed from the input's height and width, inside the graph.

A fixed-size deploy form stores its tables as constants for one resolution. A dynamic one
(``to_deploy(..., dynamic=True)``) stores only what the tables are made of — the rotary
frequencies and each head's decay rate — and rebuilds the tables once per stage and run from
the token grid's (h, w), with standard ops (Range, Mul, Sin, Cos, Sub, Abs, broadcast Add) at
rank ≤ 5. The arithmetic is the reference's (``model.rmt.RelPos``) in the same order, so the
tables are the same floats as the constant ones.
"""
from __future__ import annotations

import torch

__all__ = ["rotary", "decay_1d", "whole_decay"]


def rotary(angle: torch.Tensor, h, w) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of (h*w, len(angle)) phases: position i*w + j times each frequency."""
    # An integer Range, then a Cast, as the reference writes it: TensorRT's float Range fails to
    # build inside an FP16 network.
    index = torch.arange(h * w, device=angle.device).to(angle.dtype)
    phase = index[:, None] * angle[None, :]
    return torch.sin(phase), torch.cos(phase)


def decay_1d(decay: torch.Tensor, n) -> torch.Tensor:
    """(heads, n, n): each head's decay rate times |i - j| along one axis."""
    index = torch.arange(n, device=decay.device).to(decay.dtype)
    return (index[:, None] - index[None, :]).abs() * decay[:, None, None]


def whole_decay(decay: torch.Tensor, h, w) -> torch.Tensor:
    """(heads, h*w, h*w): the per-axis decays added by broadcast, as the fixed-size form does."""
    rows = decay_1d(decay, h)[:, :, None, :, None]
    cols = decay_1d(decay, w)[:, None, :, None, :]
    return (rows + cols).reshape(decay.shape[0], h * w, h * w)
