"""Input sizes as users write them ('224', '256x320')."""
from __future__ import annotations

from .errors import UserInputError

__all__ = ["parse_img_size", "MAX_SIDE"]

MAX_SIDE = 2048  # a sanity bound; the real limit depends on the variant (jobs.prepare._check_size)


def parse_img_size(text: str) -> tuple[int, int]:
    """'224' → (224, 224); '256x320' → (256, 320) as (H, W). Multiples of 32, 32..MAX_SIDE."""
    raw = text.strip().lower().replace("×", "x")
    parts = raw.split("x") if "x" in raw else [raw, raw]
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"--img-size '{text}' is not a size; use e.g. 224 or 256x320 (HxW)") from None
    for side in (h, w):
        if side <= 0 or side > MAX_SIDE:
            raise UserInputError(f"--img-size {text}: each side must be between 32 and {MAX_SIDE}")
        if side % 32:
            lo, hi = side // 32 * 32, side // 32 * 32 + 32
            near = f"{lo} or {hi}" if lo else f"{hi}"
            raise UserInputError(f"--img-size {text}: {side} is not a multiple of 32 (RMT downsamples "
                                 f"by 32); use {near}")
    return h, w
