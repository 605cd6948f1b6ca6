"""Reference model → deploy form (docs/design.md, "The deploy form")."""
from __future__ import annotations

import copy

import torch

from ..model.backbone import RMTBackbone
from ..model.rmt import RMT
from .backbone import DeployBackbone, feature_name
from .chunks import CHUNK_BYTES, stage_chunks
from .deploy import ENCODINGS, DeployRMT, stage_grids

__all__ = ["to_deploy", "chunk_plan", "CHUNK_BYTES", "ENCODINGS", "DeployRMT", "DeployBackbone", "feature_name",
           "table_bytes", "attention_bytes", "runtime_table_bytes"]

_RENAMED = {"executorch": "xnnpack"}  # encoding names before 0.12, still accepted


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


def runtime_table_bytes(cfg, input_size: tuple[int, int], chunk_bytes: int | None = None) -> int:
    """Bytes of the decay tables of whole-attention stages once a runtime has built them (ONNX Runtime
    and OpenVINO fold the in-graph Add at load time): memory, not file. Unchunked (``chunk_bytes`` None,
    or a stage that fits it), the (heads, h*w, h*w) table; in chunks, its row and column terms."""
    total = 0
    for i, (h, w) in enumerate(stage_grids(input_size, cfg.num_stages)):
        if not cfg.chunk_stages[i]:
            whole = _chunks(cfg, i, h, w, chunk_bytes)[0] == 1
            total += cfg.num_heads[i] * h * w * (h * w if whole else h + w)
    return 4 * total


def attention_bytes(cfg, input_size: tuple[int, int], chunk_bytes: int | None = None) -> int:
    """Largest attention score tensor one image creates (softmax doubles it), in bytes: of the reference
    (``chunk_bytes`` None) or of a deploy form chunked to ``chunk_bytes``."""
    peak = 0
    for i, (h, w) in enumerate(stage_grids(input_size, cfg.num_stages)):
        counts, heads = _chunks(cfg, i, h, w, chunk_bytes), cfg.num_heads[i]
        if cfg.chunk_stages[i]:  # row pass: rows of w x w; column pass: columns of h x h
            per_pass = max(-(-h // counts[0]) * w * w, -(-w // counts[1]) * h * h)
        else:
            per_pass = -(-h // counts[0]) * w * h * w
        peak = max(peak, heads * per_pass)
    return 4 * peak


def _chunks(cfg, stage: int, h: int, w: int, chunk_bytes: int | None) -> tuple[int, ...]:
    decomposed = cfg.chunk_stages[stage]
    if chunk_bytes is None:
        return (1, 1) if decomposed else (1,)
    return stage_chunks(cfg.num_heads[stage], h, w, decomposed, chunk_bytes)


def to_deploy(model: RMT | RMTBackbone, input_size: tuple[int, int], ffn_layout: str = "conv",
              encoding: str = "generic", dynamic: bool = False, largest: tuple[int, int] | None = None,
              chunk_bytes: int = CHUNK_BYTES) -> DeployRMT | DeployBackbone:
    """Build the export form of ``model`` (classifier or backbone) for one input size (H, W),
    multiples of the stride.

    ``ffn_layout``: "conv" runs the FFN as 1x1 convs (fastest in FP32); "linear" keeps it
    as linear layers on tokens (what ONNX Runtime fuses into int8 QGemm).
    ``encoding`` (``ENCODINGS``): "generic" writes attention and rotary with plain ONNX ops every
    runtime reads; "onnxruntime" uses ONNX Runtime's fused ops (``rewrite.fused``); "xnnpack" the
    forms XNNPACK takes whole, in ExecuTorch and in LiteRT (``rewrite.xnnpack``; "executorch", its name
    before 0.12, is still accepted).
    ``dynamic``: the decay and rotary tables are built in the graph from the input's height and
    width (``rewrite.tables``), so one graph serves every size that is a multiple of the stride;
    ``input_size`` is then only the size it is verified at. Not for the "xnnpack" encoding,
    whose lowering needs static shapes.
    ``largest``: the largest size a dynamic form takes (default ``input_size``). Whole attention runs its
    queries in chunks so that one chunk's scores fit ``chunk_bytes`` per image at that size
    (``rewrite.chunks``); ``chunk_plan`` tells the chunks each stage got.
    The reference model is not modified. The result accepts any batch size.
    """
    if ffn_layout not in ("conv", "linear"):
        raise ValueError(f"ffn_layout must be 'conv' or 'linear', not {ffn_layout!r}")
    encoding = _RENAMED.get(encoding, encoding)
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    if dynamic and encoding == "xnnpack":
        raise ValueError("the xnnpack encoding has static shapes only: dynamic must be False")
    stride = model.cfg.stride
    if input_size[0] % stride or input_size[1] % stride:
        raise ValueError(f"input size {input_size[0]}x{input_size[1]} must be a multiple of {stride}")
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        form = DeployBackbone if isinstance(ref, RMTBackbone) else DeployRMT
        deploy = form(ref, input_size, ffn_layout, encoding, dynamic, largest, chunk_bytes)
    return deploy.eval()


def chunk_plan(deploy: DeployRMT | DeployBackbone) -> str:
    """Each stage's attention chunks, as metadata records them: "6/4,1/1,10,2" (decomposed stages: row and
    column chunks; whole ones: query chunks; 1: not chunked)."""
    return ",".join("/".join(map(str, stage.chunks)) for stage in deploy.stages)
