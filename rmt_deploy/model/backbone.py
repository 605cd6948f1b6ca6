"""RMT as a detection / segmentation backbone: the four stage outputs as NCHW feature maps.

The official ``detect/`` and ``segmentation/`` code builds the same stem and stages as the
classifier (same state-dict names; SyncBatchNorm has BatchNorm's keys) without ``proj``,
``norm`` and ``head``. Each stage's output *before* its merge goes, for every index in
``out_indices``, through ``extra_norms[i]`` — ``nn.LayerNorm(embed_dims[i])`` with PyTorch's
default eps 1e-5 (the blocks use 1e-6) — and is permuted to NCHW. Strides 4, 8, 16, 32.

A classification checkpoint used as a backbone has no ``extra_norms``: the raw stage outputs
are returned (``extra_norms=False``), like a ``features_only`` model.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .rmt import PatchEmbed, Stage, _init_weights
from .variants import VARIANTS, RMTConfig, resolve_variant

__all__ = ["RMTBackbone", "create_backbone", "STRIDES", "EXTRA_NORM_EPS"]

STRIDES = (4, 8, 16, 32)
EXTRA_NORM_EPS = 1e-5  # nn.LayerNorm's default, as in the official backbone


class RMTBackbone(nn.Module):
    """Image (B, 3, H, W) → one (B, C_i, H/s_i, W/s_i) map per index in ``out_indices``."""

    def __init__(self, cfg: RMTConfig, out_indices: tuple[int, ...] = (0, 1, 2, 3), extra_norms: bool = True) -> None:
        super().__init__()
        if not out_indices or sorted(set(out_indices)) != list(out_indices) or not set(out_indices) <= {0, 1, 2, 3}:
            raise ValueError(f"out_indices must be increasing stage indices from 0-3, not {out_indices}")
        self.cfg, self.out_indices = cfg, tuple(out_indices)
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dims[0])
        n = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
        self.layers = nn.ModuleList(Stage(cfg, i, rates[s:s + cfg.depths[i]]) for i, s in enumerate(starts))
        # All four exist in official checkpoints, whatever out_indices says.
        self.extra_norms = (nn.ModuleList(nn.LayerNorm(d, eps=EXTRA_NORM_EPS) for d in cfg.embed_dims)
                            if extra_norms else None)
        self.apply(_init_weights)

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.cfg.embed_dims[i] for i in self.out_indices)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(STRIDES[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            tokens = stage.forward_blocks(x)
            if i in self.out_indices:
                y = self.extra_norms[i](tokens) if self.extra_norms is not None else tokens
                outs.append(y.permute(0, 3, 1, 2).contiguous())
            if i == self.out_indices[-1]:
                break  # later stages feed no output
            x = tokens if stage.downsample is None else stage.downsample(tokens)
        return tuple(outs)


def create_backbone(name: str, out_indices: tuple[int, ...] = (0, 1, 2, 3), extra_norms: bool = True,
                    **overrides) -> RMTBackbone:
    """A backbone variant by name (``rmt-t`` … ``rmt-l``, official names too)."""
    cfg = VARIANTS[resolve_variant(name)]
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return RMTBackbone(cfg, out_indices, extra_norms)
