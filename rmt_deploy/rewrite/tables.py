"""Decay and rotary tables: the fixed-size form's channel order and signed rotary tables, and the
tables computed from the input's height and width, inside the graph.

A fixed-size deploy form stores its tables as constants for one resolution. A dynamic one
(``to_deploy(..., dynamic=True)``) stores only what the tables are made of — the rotary
frequencies and each head's decay rate — and rebuilds the tables once per stage and run from
the token grid's (h, w), with standard ops (Range, Mul, Sin, Cos, Sub, Abs, broadcast Add) at
rank ≤ 5. The arithmetic is the reference's (``model.rmt.RelPos``) in the same order, so the
tables are the same floats as the constant ones.
"""
from __future__ import annotations

import torch

__all__ = ["evens_then_odds", "rotary_tables", "rotary", "decay_1d", "whole_decay"]


def evens_then_odds(num_heads: int, head_dim: int) -> torch.Tensor:
    """Channel order that puts each head's pair members (a, b) in two contiguous halves."""
    inner = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    return torch.cat([h * head_dim + inner for h in range(num_heads)])


def rotary_tables(sin: torch.Tensor, cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, w, head_dim) tables in ``evens_then_odds`` channel order, for one head.

    The sign of the rotation (a, b) → (-b, a) is folded into the first half of every
    head's sin, so the rotation itself becomes a swap of halves. Every head uses the same
    table: the stage repeats it across heads in the graph (``DeployStage.tables``).
    """
    head_dim = sin.shape[-1]
    perm = evens_then_odds(1, head_dim)
    sign = torch.cat([-torch.ones(head_dim // 2), torch.ones(head_dim // 2)])
    return (sin[..., perm] * sign).contiguous(), cos[..., perm].contiguous()


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


def whole_decay(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(heads, h*w, h*w) from the per-axis decays shaped (heads, h, 1, h, 1) and (heads, 1, w, 1, w), added by
    broadcast."""
    heads, h, w = rows.shape[0], rows.shape[1], cols.shape[2]
    return (rows + cols).reshape(heads, h * w, h * w)
