"""What ``export --target coreml`` accepts beyond the shared options, and which combinations work."""
from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import ClassVar

from ..errors import UserInputError
from .base import TargetOptions

__all__ = ["CoreMLSettings", "MIN_TARGETS"]

# Deployment targets a user may name; ML programs start at iOS15, INT8 weights need iOS16.
MIN_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
_INT8_WEIGHTS_FROM = {"iOS": 16, "macOS": 13}
_W8A8_FROM = {"iOS": 17, "macOS": 14}


@dataclass(frozen=True)
class CoreMLSettings(TargetOptions):
    """What ``export --target coreml`` accepts beyond the shared options."""

    KEYS: ClassVar = {"image-input": ("image_input", (bool,)), "min-target": ("min_target", (str,)),
                      "w8a8": ("w8a8", (bool,)), "license": ("license", (str,))}
    FLAGS: ClassVar = "--image-input, --min-target, --w8a8 and --license"

    image_input: bool = False  # ImageType input (0–255 RGB) with the normalisation baked in
    min_target: str = "iOS16"
    w8a8: bool = False  # with INT8: activations too (needs predict to calibrate: macOS only)
    license: str = ""

    def check(self, precisions: tuple[str, ...]) -> None:
        """Raise UserInputError for combinations that cannot work, before any work starts."""
        if self.min_target not in MIN_TARGETS:
            raise UserInputError(f"--min-target {self.min_target!r} is unknown; choose from {', '.join(MIN_TARGETS)}")
        if "int8" in precisions and not _at_least(self.min_target, _INT8_WEIGHTS_FROM):
            raise UserInputError(f"CoreML INT8 weights need --min-target iOS16 / macOS13 or newer "
                                 f"(got {self.min_target})")
        if self.w8a8:
            if "int8" not in precisions:
                raise UserInputError("--w8a8 quantizes activations on top of INT8 weights; add --int8")
            if not _at_least(self.min_target, _W8A8_FROM):
                raise UserInputError(f"--w8a8 needs --min-target iOS17 / macOS14 or newer (got {self.min_target})")
            if platform.system() != "Darwin":
                raise UserInputError("--w8a8 calibrates activations with Core ML predict, which runs only on "
                                     "macOS; use --int8 alone (INT8 weights) here, or run this export on a Mac")


def _at_least(target: str, first: dict[str, int]) -> bool:
    os_name = target.rstrip("0123456789")
    return int(target[len(os_name):]) >= first[os_name]
