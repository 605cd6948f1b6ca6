"""RMT (Retentive Networks Meet Vision Transformers) — reference PyTorch implementation.

Paper: Fan et al., "RMT: Retentive Networks Meet Vision Transformers", CVPR 2024.
Original code: github.com/qhfan/RMT, ``classfication_release/RMT.py`` (classifiers) and
``classification_token_label_release/RMT.py`` (token-labelling ``*`` models).

This is an independent implementation of the same network. It keeps the official
state-dict layout (``patch_embed.proj.N``, ``layers.i.Relpos``, ``layers.i.blocks.j``,
``layers.i.downsample``, ``proj``/``norm``/``head``/``aux_head``) so official checkpoints
load with ``strict=True``, and it follows the official order of operations so that it is a
faithful baseline for the deploy form (``rmt_deploy.rewrite``). Differences:

- no timm/fvcore/einops: DropPath and the initialisers are written here;
- swish is ``x * sigmoid(x)`` instead of a custom autograd Function (same values);
- the token-label model returns ``head(cls) + 0.5 * max_tokens(aux_head(tokens))`` in
  eval mode only (the MixToken training path is not reproduced);
- variants are rows of one table (``model.variants.VARIANTS``) instead of one function each;
- ``attention_in_chunks`` runs the attention a chunk of queries at a time (verification at
  detection sizes); outside it the forward is the official one.

Tokens are channels-last (B, H, W, C) throughout the trunk, as in the original.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .variants import VARIANTS, RMTConfig, resolve_variant

__all__ = ["RMT", "create_model", "attention_in_chunks", "CHUNK_ELEMENTS"]

# Scores of one chunk (64 MB of float32) in ``attention_in_chunks``.
CHUNK_ELEMENTS = 16 << 20

# ---------------------------------------------------------------- helpers


class DropPath(nn.Module):
    """Stochastic depth per sample; identity at inference."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class DWConv2d(nn.Module):
    """Depthwise conv applied to channels-last tokens."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """Map each channel pair (a, b) to (-b, a) — the official 'rotate every two'."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-odd, even), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_pairs(x) * sin


class RelPos(nn.Module):
    """Rotary angles and per-head decay rates of one stage.

    ``angle`` and ``decay`` are persistent because official checkpoints store them.
    The tables for a given resolution are derived on each call here; the deploy form
    turns them into constant buffers (``rmt_deploy.rewrite``).
    """

    def __init__(self, dim: int, num_heads: int, init_value: float, heads_range: float) -> None:
        super().__init__()
        half = dim // num_heads // 2
        angle = 1.0 / (10000 ** torch.linspace(0, 1, half))
        self.register_buffer("angle", angle.repeat_interleave(2))
        heads = torch.arange(num_heads, dtype=torch.float)
        self.register_buffer("decay", torch.log(1 - 2 ** (-init_value - heads_range * heads / num_heads)))

    def rotary(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sin and cos tables (h, w, head_dim); the position is the flat index i*w + j."""
        index = torch.arange(h * w).to(self.decay)
        phase = index[:, None] * self.angle[None, :]
        return torch.sin(phase).reshape(h, w, -1), torch.cos(phase).reshape(h, w, -1)

    def decay_1d(self, n: int) -> torch.Tensor:
        """(heads, n, n): decay_h * |i - j| along one axis."""
        index = torch.arange(n).to(self.decay)
        dist = (index[:, None] - index[None, :]).abs()
        return dist * self.decay[:, None, None]

    def decay_2d(self, h: int, w: int, queries: slice = slice(None)) -> torch.Tensor:
        """(heads, h*w, h*w): decay_h * Manhattan distance between flat positions; the rows of
        ``queries`` only, if given."""
        ii, jj = torch.meshgrid(torch.arange(h).to(self.decay), torch.arange(w).to(self.decay),
                                indexing="ij")
        grid = torch.stack((ii, jj), dim=-1).reshape(h * w, 2)
        dist = (grid[queries, None, :] - grid[None, :, :]).abs().sum(-1)
        return dist * self.decay[:, None, None]


# ---------------------------------------------------------------- blocks


class MaSA(nn.Module):
    """Manhattan Self-Attention (retention) with explicit decay.

    ``decomposed=True`` runs the row pass then the column pass (stages with
    ``chunk_stages``); otherwise one pass over all tokens with the 2-D decay.
    """

    def __init__(self, dim: int, num_heads: int, decomposed: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.decomposed = decomposed
        self.chunk_elements: int | None = None  # set by ``attention_in_chunks``
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.lepe = DWConv2d(dim, 5)
        self.out_proj = nn.Linear(dim, dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_normal_(proj.weight, gain=2 ** -2.5)
        nn.init.xavier_normal_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, relpos: RelPos) -> torch.Tensor:
        b, h, w, c = x.shape
        n, d = self.num_heads, self.head_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        lepe = self.lepe(v)
        k = k * self.scaling
        sin, cos = relpos.rotary(h, w)
        q = apply_rotary(q.view(b, h, w, n, d).permute(0, 3, 1, 2, 4), sin, cos)  # (b n h w d)
        k = apply_rotary(k.view(b, h, w, n, d).permute(0, 3, 1, 2, 4), sin, cos)
        if self.decomposed:
            out = self._decomposed(q, k, v.view(b, h, w, n, d), relpos)
        else:
            out = self._whole(q, k, v.view(b, h, w, n, d), relpos)
        return self.out_proj(out.reshape(b, h, w, c) + lepe)

    def _decomposed(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relpos: RelPos) -> torch.Tensor:
        h, w = q.shape[2], q.shape[3]
        # Row pass: attend along W inside each row.
        qw, kw = q.transpose(1, 2), k.transpose(1, 2)  # (b h n w d)
        v = self._per_row(qw, kw, v.permute(0, 1, 3, 2, 4), relpos.decay_1d(w))  # (b h n w d)
        # Column pass on that result: attend along H inside each column.
        qh, kh = q.permute(0, 3, 1, 2, 4), k.permute(0, 3, 1, 2, 4)  # (b w n h d)
        out = self._per_row(qh, kh, v.permute(0, 3, 2, 1, 4), relpos.decay_1d(h))  # (b w n h d)
        return out.permute(0, 3, 1, 2, 4)  # (b h w n d)

    def _per_row(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
        """softmax(q·kᵀ + decay)·v for each index of axis 1 (grid rows or columns) on its own."""
        rows = q.shape[1]
        step = _chunk(rows, q[:, :1].numel() // q.shape[-1] * k.shape[-2], self.chunk_elements)
        if step >= rows:
            return torch.softmax(q @ k.transpose(-1, -2) + decay, dim=-1) @ v
        return torch.cat([torch.softmax(q[:, i:i + step] @ k[:, i:i + step].transpose(-1, -2) + decay, dim=-1)
                          @ v[:, i:i + step] for i in range(0, rows, step)], dim=1)

    def _whole(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relpos: RelPos) -> torch.Tensor:
        b, n, h, w, d = q.shape
        q, k = q.flatten(2, 3), k.flatten(2, 3)  # (b n l d)
        v = v.permute(0, 3, 1, 2, 4).flatten(2, 3)
        step = _chunk(h * w, b * n * h * w, self.chunk_elements)
        if step >= h * w:
            attn = torch.softmax(q @ k.transpose(-1, -2) + relpos.decay_2d(h, w), dim=-1)
            return (attn @ v).transpose(1, 2)  # (b l n d)
        spans = [slice(i, i + step) for i in range(0, h * w, step)]
        return torch.cat([torch.softmax(q[:, :, s] @ k.transpose(-1, -2) + relpos.decay_2d(h, w, s), dim=-1) @ v
                          for s in spans], dim=2).transpose(1, 2)


def _chunk(rows: int, per_row: int, budget: int | None) -> int:
    """Rows per chunk so that one chunk's scores (``per_row`` each) stay within ``budget``; all without one."""
    return rows if budget is None else max(1, budget // per_row)


@contextmanager
def attention_in_chunks(model: nn.Module, elements: int = CHUNK_ELEMENTS):
    """Inside, every attention of ``model`` takes its queries a chunk at a time, so that one chunk's scores
    stay within ``elements`` floats: the same values (each query's softmax still covers all its keys),
    for verifying at detection sizes without holding every (heads, N, N) score and decay tensor at once."""
    before = {m: m.chunk_elements for m in model.modules() if isinstance(m, MaSA)}
    for m in before:
        m.chunk_elements = elements
    try:
        yield model
    finally:
        for m, value in before.items():
            m.chunk_elements = value


class ConvFFN(nn.Module):
    """fc1 → GELU → h + dwconv3x3(h) → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dwconv = DWConv2d(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x))
        return self.fc2(h + self.dwconv(h))


class RetBlock(nn.Module):
    """CPE (``pos``) → retention → FFN, each residual; optional layer scale."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, decomposed: bool,
                 drop_path: float = 0.0, layerscale: bool = False, init_value: float = 1e-6) -> None:
        super().__init__()
        self.pos = DWConv2d(dim, 3)
        self.retention_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.retention = MaSA(dim, num_heads, decomposed)
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, ffn_dim)
        self.drop_path = DropPath(drop_path)
        self.layerscale = layerscale
        if layerscale:
            self.gamma_1 = nn.Parameter(torch.full((1, 1, 1, dim), init_value))
            self.gamma_2 = nn.Parameter(torch.full((1, 1, 1, dim), init_value))

    def forward(self, x: torch.Tensor, relpos: RelPos) -> torch.Tensor:
        x = x + self.pos(x)
        attn = self.retention(self.retention_layer_norm(x), relpos)
        if self.layerscale:
            attn = self.gamma_1 * attn
        x = x + self.drop_path(attn)
        ffn = self.ffn(self.final_layer_norm(x))
        if self.layerscale:
            ffn = self.gamma_2 * ffn
        return x + self.drop_path(ffn)


class PatchMerging(nn.Module):
    """conv3x3 stride 2 → BN, channels-last in and out."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


class Stage(nn.Module):
    """``depth`` blocks sharing one RelPos, then an optional merge."""

    def __init__(self, cfg: RMTConfig, i: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim, heads = cfg.embed_dims[i], cfg.num_heads[i]
        self.Relpos = RelPos(dim, heads, cfg.init_values[i], cfg.heads_ranges[i])
        self.blocks = nn.ModuleList(
            RetBlock(dim, heads, int(cfg.mlp_ratios[i] * dim), cfg.chunk_stages[i], dp,
                     cfg.layerscales[i], cfg.layer_init_value)
            for dp in drop_paths)
        last = i == cfg.num_stages - 1
        self.downsample = None if last else PatchMerging(dim, cfg.embed_dims[i + 1])

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's output before its merge: what a detection backbone taps."""
        for block in self.blocks:
            x = block(x, self.Relpos)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    """Stem: four 3x3 convs (strides 2,1,2,1) with BN, GELU between → /4, channels-last."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, 2, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, dim, 3, 2, 1), nn.BatchNorm2d(dim), nn.GELU(),
            nn.Conv2d(dim, dim, 3, 1, 1), nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


# ---------------------------------------------------------------- model


class RMT(nn.Module):
    """RMT image classifier.

    Args:
        cfg: architecture numbers (a ``VARIANTS`` row, possibly with overrides).
    """

    def __init__(self, cfg: RMTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dims[0])
        n = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear rule
        starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
        self.layers = nn.ModuleList(
            Stage(cfg, i, rates[s:s + cfg.depths[i]]) for i, s in enumerate(starts))
        self.proj = nn.Linear(cfg.embed_dims[-1], cfg.projection)
        self.norm = nn.BatchNorm2d(cfg.projection)
        self.head = nn.Linear(cfg.projection, cfg.num_classes)
        self.aux_head = nn.Linear(cfg.embed_dims[-1], cfg.num_classes) if cfg.token_label else None
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) → last-stage tokens (B, H/32, W/32, C)."""
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → logits: proj → BN → swish → mean → head (+ token-label term)."""
        y = self.norm(self.proj(x).permute(0, 3, 1, 2)).flatten(2)  # (B, P, L)
        y = (y * torch.sigmoid(y)).mean(-1)
        logits = self.head(y)
        if self.aux_head is not None:
            logits = logits + 0.5 * self.aux_head(x.flatten(1, 2)).max(1).values
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    # The official init; MaSA re-initialises its projections in its own __init__ before
    # this runs, and this overrides them exactly as the original does.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def create_model(name: str, **overrides) -> RMT:
    """Build a variant by name (ours or official), e.g. ``create_model("rmt-s", num_classes=10)``.

    Args:
        name: ``rmt-t``/``rmt-s``/``rmt-b``/``rmt-l`` (``-tl`` for token-label), ``rmt-demo``,
            or an official function name such as ``RMT_S``.
        **overrides: any ``RMTConfig`` field.
    """
    cfg = VARIANTS[resolve_variant(name)]
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return RMT(cfg)
