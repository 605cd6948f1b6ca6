"""Input sizes as users write them ('224', '256x320')."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserInputError

__all__ = ["parse_img_size", "check_side", "SizeRange", "MAX_SIDE"]

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


def check_side(flag: str, side: int) -> int:
    """One side length of a flag such as --min-size: a multiple of 32 in 32..MAX_SIDE."""
    if not 32 <= side <= MAX_SIDE or side % 32:
        raise UserInputError(f"{flag} {side} must be a multiple of 32 between 32 and {MAX_SIDE} (RMT downsamples "
                             f"by 32); use e.g. {max(32, min(MAX_SIDE, round(side / 32) * 32))}")
    return side


@dataclass(frozen=True)
class SizeRange:
    """The heights and widths a dynamic artifact takes: each side in [low, high], multiples of 32."""

    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def holds(self, size: tuple[int, int]) -> bool:
        return all(self.low <= side <= self.high and side % 32 == 0 for side in size)

    def verified_sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """Where a dynamic artifact is checked: both ends of the range, ``size`` (what it is
        calibrated and timed at) and a non-square size reaching both ends."""
        ends = [(self.low, self.low), (self.low, self.high), (self.high, self.high)]
        return sorted(set([size, *ends]), key=lambda s: (s[0] * s[1], s))

    @classmethod
    def around(cls, size: tuple[int, int]) -> SizeRange:
        """The default range for ``--dynamic``: half the short side to twice the long side."""
        return cls(max(32, min(size) // 2 // 32 * 32), min(MAX_SIDE, 2 * max(size)))
