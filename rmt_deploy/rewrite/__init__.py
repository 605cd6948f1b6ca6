"""Reference model → deploy form (DESIGN §3)."""
from __future__ import annotations

import copy

import torch

from ..model.rmt import RMT
from .deploy import DeployRMT

__all__ = ["to_deploy", "DeployRMT", "table_bytes", "attention_bytes"]


def table_bytes(cfg, input_size: tuple[int, int]) -> int:
    """Bytes of the constant decay and rotary tables the deploy form embeds at this size.

    Whole-attention stages hold a (heads, h*w, h*w) decay table, so this grows with the
    fourth power of the side length and bounds the usable resolution.
    """
    h, w = input_size[0] // 4, input_size[1] // 4
    total = 0
    for i in range(cfg.num_stages):
        tokens = h * w
        total += 2 * tokens * cfg.embed_dims[i]  # sin, cos
        if cfg.chunk_stages[i]:
            total += cfg.num_heads[i] * (h * h + w * w)
        else:
            total += cfg.num_heads[i] * tokens * tokens
        h, w = (h + 1) // 2, (w + 1) // 2
    return 4 * total


def attention_bytes(cfg, input_size: tuple[int, int]) -> int:
    """Largest attention matrix one image creates (logits; softmax doubles it), in bytes."""
    h, w = input_size[0] // 4, input_size[1] // 4
    peak = 0
    for i in range(cfg.num_stages):
        per_pass = h * w * max(h, w) if cfg.chunk_stages[i] else (h * w) ** 2
        peak = max(peak, cfg.num_heads[i] * per_pass)
        h, w = (h + 1) // 2, (w + 1) // 2
    return 4 * peak


def to_deploy(model: RMT, input_size: tuple[int, int], ffn_layout: str = "conv") -> DeployRMT:
    """Build the export form of ``model`` for one input size (H, W), multiples of the stride.

    ``ffn_layout``: "conv" runs the FFN as 1x1 convs (fastest in FP32); "linear" keeps it
    as linear layers on tokens (what ONNX Runtime fuses into int8 QGemm).
    The reference model is not modified. The result accepts any batch size.
    """
    if ffn_layout not in ("conv", "linear"):
        raise ValueError(f"ffn_layout must be 'conv' or 'linear', not {ffn_layout!r}")
    stride = model.cfg.stride
    if input_size[0] % stride or input_size[1] % stride:
        raise ValueError(f"input size {input_size[0]}x{input_size[1]} must be a multiple of {stride}")
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        deploy = DeployRMT(ref, input_size, ffn_layout)
    return deploy.eval()
