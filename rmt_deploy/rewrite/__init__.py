"""Reference model → deploy form (DESIGN §3)."""
from __future__ import annotations

import copy

import torch

from ..model.backbone import RMTBackbone
from ..model.rmt import RMT
from .backbone import DeployBackbone, feature_name
from .deploy import ENCODINGS, DeployRMT

__all__ = ["to_deploy", "ENCODINGS", "DeployRMT", "DeployBackbone", "feature_name", "table_bytes", "attention_bytes",
           "runtime_table_bytes"]


def table_bytes(cfg, input_size: tuple[int, int]) -> int:
    """Bytes of the constant decay and rotary tables the deploy form embeds at this size.

    Rotary tables grow with the token count, decay tables with the side: whole-attention stages
    hold per-axis decay tables and build the (heads, h*w, h*w) one in the graph.
    """
    h, w = input_size[0] // 4, input_size[1] // 4
    total = 0
    for i in range(cfg.num_stages):
        total += 2 * h * w * cfg.embed_dims[i] // cfg.num_heads[i]  # sin, cos of one head
        total += cfg.num_heads[i] * (h * h + w * w)  # per-axis decay
        h, w = (h + 1) // 2, (w + 1) // 2
    return 4 * total


def runtime_table_bytes(cfg, input_size: tuple[int, int]) -> int:
    """Bytes of the (heads, h*w, h*w) decay tables of whole-attention stages once a runtime has
    built them (ONNX Runtime and OpenVINO fold the in-graph Add at load time): memory, not file."""
    h, w = input_size[0] // 4, input_size[1] // 4
    total = 0
    for i in range(cfg.num_stages):
        if not cfg.chunk_stages[i]:
            total += cfg.num_heads[i] * (h * w) ** 2
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


def to_deploy(model: RMT | RMTBackbone, input_size: tuple[int, int],
              ffn_layout: str = "conv", encoding: str = "generic", dynamic: bool = False) -> DeployRMT | DeployBackbone:
    """Build the export form of ``model`` (classifier or backbone) for one input size (H, W),
    multiples of the stride.

    ``ffn_layout``: "conv" runs the FFN as 1x1 convs (fastest in FP32); "linear" keeps it
    as linear layers on tokens (what ONNX Runtime fuses into int8 QGemm).
    ``encoding`` (``ENCODINGS``): "generic" writes attention and rotary with plain ONNX ops every
    runtime reads; "onnxruntime" uses ONNX Runtime's fused ops (``rewrite.fused``); "executorch" the
    forms ExecuTorch's XNNPACK delegate takes (``rewrite.xnnpack``).
    ``dynamic``: the decay and rotary tables are built in the graph from the input's height and
    width (``rewrite.tables``), so one graph serves every size that is a multiple of the stride;
    ``input_size`` is then only the size it is verified at. Not for the "executorch" encoding,
    whose lowering needs static shapes.
    The reference model is not modified. The result accepts any batch size.
    """
    if ffn_layout not in ("conv", "linear"):
        raise ValueError(f"ffn_layout must be 'conv' or 'linear', not {ffn_layout!r}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    if dynamic and encoding == "executorch":
        raise ValueError("the executorch encoding has static shapes only: dynamic must be False")
    stride = model.cfg.stride
    if input_size[0] % stride or input_size[1] % stride:
        raise ValueError(f"input size {input_size[0]}x{input_size[1]} must be a multiple of {stride}")
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        form = DeployBackbone if isinstance(ref, RMTBackbone) else DeployRMT
        deploy = form(ref, input_size, ffn_layout, encoding, dynamic)
    return deploy.eval()
