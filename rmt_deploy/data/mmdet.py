"""mmdet's test-time resize, reproduced without mmdet: keep-ratio scale, bilinear, pad to a multiple.

mmdet's detection configs (2.x ``Resize(img_scale=(1333, 800), keep_ratio=True)`` + ``Pad(size_divisor=32)``,
and 3.x's ``Resize`` + the data preprocessor's ``pad_size_divisor``) compute the same sizes:

- scale factor = min(long limit / long side, short limit / short side) — small images grow too;
- each side = int(side × factor + 0.5) (mmcv's ``rescale_size``: half up, per side);
- OpenCV bilinear (``INTER_LINEAR``, no antialiasing) on the 8-bit image, then normalise;
- pad bottom and right with zeros (after normalisation) to a multiple of ``divisor``.

So each image gets its own input size; a dynamic artifact (``export --dynamic``) takes them.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_SCALE", "resized_size", "padded_size", "input_size", "largest_input", "resize_and_pad"]

DEFAULT_SCALE = (1333, 800)  # (long edge limit, short edge limit): mmdet's COCO test pipeline


def resized_size(h: int, w: int, scale: tuple[int, int] = DEFAULT_SCALE) -> tuple[int, int]:
    """(H, W) after the keep-ratio resize."""
    long_limit, short_limit = max(scale), min(scale)
    factor = min(long_limit / max(h, w), short_limit / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def padded_size(h: int, w: int, divisor: int = 32) -> tuple[int, int]:
    return math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor


def input_size(h: int, w: int, scale: tuple[int, int] = DEFAULT_SCALE, divisor: int = 32) -> tuple[int, int]:
    """The model input an (h, w) image becomes: resized, then padded."""
    return padded_size(*resized_size(h, w, scale), divisor)


def largest_input(scale: tuple[int, int] = DEFAULT_SCALE, divisor: int = 32) -> tuple[int, int]:
    """(short, long) padded edge limits: the largest input a landscape image becomes (800x1344 for 1333x800)."""
    return padded_size(min(scale), max(scale), divisor)


def resize_and_pad(rgb: np.ndarray, mean, std, scale: tuple[int, int] = DEFAULT_SCALE,
                   divisor: int = 32) -> np.ndarray:
    """HWC uint8 RGB → normalised (3, H, W) float32, resized and padded as above."""
    import torch

    h, w = rgb.shape[:2]
    rh, rw = resized_size(h, w, scale)
    x = torch.from_numpy(np.array(rgb, np.uint8)).permute(2, 0, 1)[None].float()  # a copy: PIL arrays are read-only
    if (rh, rw) != (h, w):  # half-pixel centres, no antialiasing: OpenCV's INTER_LINEAR; back to 8 bits like it
        x = torch.nn.functional.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255)
    x = x[0].numpy() / 255.0
    x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    out = np.zeros((3, *padded_size(rh, rw, divisor)), np.float32)
    out[:, :rh, :rw] = x
    return out
