"""Input sizes as users write them ('224', '256x320'), and the sizes an artifact takes."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserInputError

__all__ = ["parse_img_size", "parse_sizes", "check_side", "SizeRange", "InputSizes", "MAX_SIDE", "ENUMERATED_KEY",
           "format_sizes"]

ENUMERATED_KEY = "input_sizes"  # artifact metadata: the only (H, W) it takes, "32x32,32x128,64x64" (Core ML)
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


def parse_sizes(text: str, flag: str = "--size") -> tuple[tuple[int, int], ...]:
    """'224,288x384' → ((224, 224), (288, 384)): comma-separated sizes, each like ``--img-size``."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise UserInputError(f"{flag} '{text}' names no size; use e.g. 224,288x384")
    sizes = []
    for part in parts:
        try:
            sizes.append(parse_img_size(part))
        except UserInputError as e:
            raise UserInputError(str(e).replace("--img-size", flag, 1)) from None
    return tuple(dict.fromkeys(sizes))


def format_sizes(sizes, sep: str = ",") -> str:
    """((32, 32), (32, 128)) → '32x32,32x128': how metadata writes a list of sizes (``ENUMERATED_KEY``)."""
    return sep.join(f"{h}x{w}" for h, w in sizes)


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

    @property
    def largest(self) -> tuple[int, int]:
        """The largest input the range takes (what a dynamic form's attention chunks are planned for)."""
        return self.high, self.high

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


@dataclass(frozen=True)
class InputSizes:
    """The (H, W) one artifact takes: a range (``--dynamic``), enumerated sizes (Core ML) or one size."""

    size: tuple[int, int]  # what it was verified and tuned at
    size_range: SizeRange | None = None
    enumerated: tuple[tuple[int, int], ...] = ()

    def holds(self, size: tuple[int, int]) -> bool:
        if self.enumerated:
            return tuple(size) in self.enumerated
        if self.size_range is not None:
            return self.size_range.holds(size)
        return tuple(size) == self.size

    def __str__(self) -> str:
        if self.enumerated:
            return "one of " + format_sizes(self.enumerated, ", ")
        if self.size_range is not None:
            return f"each side {self.size_range.low}–{self.size_range.high}, a multiple of 32"
        return f"only {self.size[0]}x{self.size[1]}"

    @classmethod
    def of(cls, metadata: dict, size: tuple[int, int]) -> InputSizes:
        """From an artifact's metadata (``dynamic_size`` "lo-hi", Core ML's ``input_sizes``)."""
        enumerated = tuple(parse_img_size(s) for s in metadata.get(ENUMERATED_KEY, "").split(",") if s)
        low_high = metadata.get("dynamic_size")
        size_range = SizeRange(*(int(v) for v in low_high.split("-"))) if low_high else None
        return cls(tuple(size), size_range, enumerated)

    def check(self, size: tuple[int, int], what: str, fix: str) -> None:
        """UserInputError naming the sizes taken when ``size`` is not one of them."""
        if not self.holds(size):
            raise UserInputError(f"{what}: {size[0]}x{size[1]} is outside the sizes this artifact takes "
                                 f"({self}); {fix}")
