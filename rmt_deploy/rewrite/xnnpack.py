"""Ops of the deploy form's XNNPACK encoding (``to_deploy(encoding="xnnpack")``), each written
in the form ExecuTorch's XNNPACK partitioner (1.5) takes into its delegate, so the whole network
runs as XNNPACK kernels instead of ExecuTorch's portable ones. What each replaces, and why:

- ``LayerNorm``: ``aten.native_layer_norm`` has no XNNPACK config. Its mean and variance become
  global average pools over a (tokens, 1, 1, C) view: ``mean.dim`` is delegated for 4-D tensors over
  dims (2, 3) with keepdim only.
- ``attention``: a 4-D ``q @ kᵀ`` lowers with a portable ``expand_copy`` that cuts the graph in
  pieces; 3-D ``bmm`` stays in one delegate.
- ``swap_halves``: the rotary rotation as two slices and a concat (``split_with_sizes`` is portable).
- ``token_mean``: the classifier's pooling as the same 4-D global average pool.
GELU is ``F.gelu`` (exact erf form, one XNNPACK op; ``erf`` alone is not delegated).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LayerNorm", "attention", "swap_halves", "token_mean", "gelu"]


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


class LayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last dim, with its statistics as 4-D global average pools."""

    def __init__(self, ref: nn.LayerNorm) -> None:
        super().__init__()
        self.eps = ref.eps
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.reshape(-1, 1, 1, x.shape[-1])
        centred = t - t.mean(dim=(2, 3), keepdim=True)
        var = (centred * centred).mean(dim=(2, 3), keepdim=True)
        return (centred * torch.rsqrt(var + self.eps) * self.weight + self.bias).reshape(x.shape)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ + mask)·v for (B, heads, N, d) inputs and a (heads, N, N) mask, as 3-D bmm."""
    heads, n, d = q.shape[1], q.shape[2], q.shape[3]
    scores = torch.bmm(q.reshape(-1, n, d), k.reshape(-1, n, d).transpose(1, 2))
    attn = torch.softmax(scores.reshape(-1, heads, n, n) + mask, dim=-1)
    return torch.bmm(attn.reshape(-1, n, n), v.reshape(-1, n, d)).reshape(-1, heads, n, d)


def swap_halves(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Per head, [a | b] → [b | a] on (…, heads·d) channels-last tokens."""
    half = t.shape[-1] // (2 * heads)
    pairs = t.reshape(-1, heads, 2, half)
    return torch.cat((pairs[:, :, 1:2], pairs[:, :, 0:1]), dim=2).reshape(t.shape)


def token_mean(y: torch.Tensor) -> torch.Tensor:
    """Mean over H and W of (B, H, W, C) tokens → (B, C)."""
    return y.permute(0, 3, 1, 2).mean(dim=(2, 3), keepdim=True).flatten(1)
