"""The two fused ops of the deploy form's ONNX Runtime encoding (``to_deploy(encoding="onnxruntime")``).

Each function computes its math in eager PyTorch (what parity tests compare against the reference)
and becomes one ONNX node under ``torch.onnx.export``:

- ``attention``: ONNX ``Attention`` (opset 23) on 3-D (B, N, heads·d) tokens with the decay as a float
  ``attn_mask`` broadcast over the batch. Fed 3-D tokens it needs none of the reshape/transpose pairs
  around a 4-D MatMul → Add → Softmax → MatMul; fed 4-D tensors it measured no faster (#18).
- ``rotary``: ``com.microsoft.RotaryEmbedding`` in its rotate-half form (the deploy form's
  evens-then-odds channel order). Its ``position_ids`` may be one start offset, so one (N, d/2)
  table serves any batch; the ONNX-domain RotaryEmbedding wants position ids or tables shaped by
  the batch, which a dynamic-batch graph could only build with shape arithmetic.
"""
from __future__ import annotations

import torch

__all__ = ["attention", "rotary", "OPSET"]

OPSET = 23  # the first opset with Attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q·kᵀ + mask)·v per head on (B, N, heads·d) tokens; ``mask`` is (heads, N, N).
    The key scaling is already in the key weights, hence scale 1."""
    return torch.onnx.ops.attention(q, k, v, mask, q_num_heads=heads, kv_num_heads=heads, scale=1.0)[0]


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotate each head's pairs (a, b) = (first half, second half) of (B, N, heads·d) tokens by the
    angles of (N, d/2) tables: (a·cos − b·sin, b·cos + a·sin)."""
    if torch.onnx.is_in_onnx_export():
        start = torch.zeros(1, dtype=torch.int64)
        return torch.onnx.ops.symbolic("com.microsoft::RotaryEmbedding", (x, start, cos, sin),
                                       {"num_heads": heads}, dtype=x.dtype, shape=x.shape, version=1)
    half = cos.shape[-1]
    t = x.reshape(x.shape[0], x.shape[1], heads, 2 * half)
    a, b = t[..., :half], t[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((a * c - b * s, b * c + a * s), dim=-1).reshape(x.shape)
