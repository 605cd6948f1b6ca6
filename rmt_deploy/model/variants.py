"""RMT variants: the configuration of each model size (one table), the official names, and
name resolution. Facts from the official code (``classfication_release/RMT.py``)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = ["RMTConfig", "VARIANTS", "ALIASES", "resolve_variant", "UnknownVariantError", "Stage4"]

Stage4 = tuple[int, int, int, int]


@dataclass(frozen=True)
class RMTConfig:
    """Architecture numbers of one RMT variant (docs/checkpoints.md lists them; one row per variant)."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    init_values: tuple[float, ...]
    heads_ranges: tuple[float, ...]
    mlp_ratios: tuple[float, ...]
    chunk_stages: tuple[bool, ...]  # True: decomposed (row then column) retention
    layerscales: tuple[bool, ...]
    layer_init_value: float = 1e-6
    projection: int = 1024
    num_classes: int = 1000
    token_label: bool = False
    in_chans: int = 3
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.embed_dims)
        per_stage = ("depths", "num_heads", "init_values", "heads_ranges", "mlp_ratios",
                     "chunk_stages", "layerscales")
        for name in per_stage:
            if len(getattr(self, name)) != n:
                raise ValueError(f"RMTConfig.{name} needs {n} entries, one per stage")
        for dim, heads in zip(self.embed_dims, self.num_heads):
            if dim % heads or (dim // heads) % 2:
                raise ValueError(f"embed dim {dim} must split into {heads} heads of even size")

    @property
    def num_stages(self) -> int:
        return len(self.embed_dims)

    @property
    def stride(self) -> int:
        """Total downsampling: /4 stem, /2 per merge."""
        return 4 * 2 ** (self.num_stages - 1)


_T = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), num_heads=(4, 4, 8, 16),
          init_values=(2, 2, 2, 2), heads_ranges=(4, 4, 6, 6), mlp_ratios=(3, 3, 3, 3),
          chunk_stages=(True, True, False, False), layerscales=(False,) * 4)
_S = dict(embed_dims=(64, 128, 256, 512), depths=(3, 4, 18, 4), num_heads=(4, 4, 8, 16),
          init_values=(2, 2, 2, 2), heads_ranges=(4, 4, 6, 6), mlp_ratios=(4, 4, 3, 3),
          chunk_stages=(True, True, True, False), layerscales=(False,) * 4)
_B = dict(embed_dims=(80, 160, 320, 512), depths=(4, 8, 25, 8), num_heads=(5, 5, 10, 16),
          init_values=(2, 2, 2, 2), heads_ranges=(5, 5, 6, 6), mlp_ratios=(4, 4, 3, 3),
          chunk_stages=(True, True, True, False), layerscales=(False, False, True, True))
_L = dict(embed_dims=(112, 224, 448, 640), depths=(4, 8, 25, 8), num_heads=(7, 7, 14, 20),
          init_values=(2, 2, 2, 2), heads_ranges=(6, 6, 6, 6), mlp_ratios=(4, 4, 3, 3),
          chunk_stages=(True, True, True, False), layerscales=(False, False, True, True))
# The bundled demo: same blocks, narrower and shallower, 10 classes (rmt_deploy/assets).
_DEMO = dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4),
             init_values=(2, 2, 2, 2), heads_ranges=(4, 4, 6, 6), mlp_ratios=(3, 3, 3, 3),
             chunk_stages=(True, True, False, False), layerscales=(False,) * 4,
             projection=256, num_classes=10)

VARIANTS: dict[str, RMTConfig] = {
    "rmt-t": RMTConfig(**_T),
    "rmt-t-tl": RMTConfig(**_T, token_label=True),
    "rmt-s": RMTConfig(**_S),
    "rmt-s-tl": RMTConfig(**_S, token_label=True),
    "rmt-b": RMTConfig(**_B),
    "rmt-b-tl": RMTConfig(**_B, token_label=True),
    "rmt-l": RMTConfig(**_L),
    "rmt-l-tl": RMTConfig(**_L, token_label=True),
    "rmt-demo": RMTConfig(**_DEMO),
}

# Official function names in qhfan/RMT → ours.
ALIASES: dict[str, str] = {"rmt_t3": "rmt-t", "rmt_s": "rmt-s", "rmt_m2": "rmt-b", "rmt_l6": "rmt-l"}


class UnknownVariantError(ValueError):
    """Raised for an architecture name that is neither a variant nor an alias."""


def resolve_variant(name: str) -> str:
    """Normalise a user-given architecture name (``RMT_S``, ``rmt_s``, ``rmt-s``) to ours."""
    key = name.strip().lower()
    key = ALIASES.get(key, key).replace("_", "-")
    if key in VARIANTS:
        return key
    close = difflib.get_close_matches(key, list(VARIANTS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UnknownVariantError(
        f"unknown architecture '{name}'{hint} (choose from {', '.join(VARIANTS)})")
