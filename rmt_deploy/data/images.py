"""Image sets (ImageFolder, flat folder, list file) and preprocessing to model input."""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import UserInputError
from .mmdet import DEFAULT_SCALE, resize_and_pad

__all__ = ["IMAGE_SUFFIXES", "RESIZE_MODES", "MAX_PIXELS", "EXIF", "ImageSet", "Preprocess", "UnreadableImage",
           "read_image", "open_image_set", "load_batch", "iter_batches"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


RESIZE_MODES = ("crop", "letterbox", "mmdet")
# Larger images are refused as decompression bombs: 2^28 pixels (16384²) holds any camera's photo
# (a 200 MP phone sensor is 2^27.6) and decodes to at most 768 MiB of RGB.
MAX_PIXELS = 2 ** 28
# How files become pixels, recorded in every artifact's metadata and report (``read_image``).
EXIF = "orientation applied"


class UnreadableImage(UserInputError):
    """A file that is not an image this reader can decode; the message is one line saying why."""


def read_image(path: str | Path):
    """A file → the decoded PIL image as a viewer shows it: the EXIF orientation applied (phone
    photos are stored rotated, with a tag saying so). The one reader behind predict, calibration,
    verification, ``--eval``, ``rd.load(...).predict/features`` and mmdet's resize.

    Raises:
        UnreadableImage: not an image, truncated, or over ``MAX_PIXELS`` (a decompression bomb).
    """
    from PIL import Image, ImageOps

    name = Path(path).name
    limit = Image.MAX_IMAGE_PIXELS
    try:
        # Pillow's own limit (a warning, then an error at 2x 89 MP) would refuse a 200 MP photo: ours decides
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise UnreadableImage(f"{name}: {w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit "
                                      "(a decompression bomb, or a scan to downsize first)")
            im.load()
            return ImageOps.exif_transpose(im)
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise UnreadableImage(f"{name}: no such file") from None
    except IsADirectoryError:
        raise UnreadableImage(f"{name}: a folder, not an image") from None
    except Exception as e:  # noqa: BLE001 — Pillow's plugins raise OSError, SyntaxError, struct.error, IndexError …
        reason = "not an image Pillow can identify" if "cannot identify" in str(e) else \
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'damaged'}"
        raise UnreadableImage(f"{name}: {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


@dataclass(frozen=True)
class Preprocess:
    """Image → normalised (3, H, W) model input, by one of two recipes (``resize``):

    - ``crop`` (classifiers): resize to cover ``size / crop_pct`` keeping aspect, centre-crop
      ``size`` — timm's eval transform (bicubic, crop_pct), without torchvision.
    - ``letterbox`` (detection / segmentation backbones): resize keeping aspect to fit inside
      ``size``, normalise, pad bottom and right with zeros — what mmdet's keep-ratio Resize
      followed by Pad does (its padding is 0 after normalisation); ``crop_pct`` is unused.
    - ``mmdet`` (backbones of a ``--dynamic`` artifact): mmdet's own test resize (``data.mmdet``):
      fit ``scale`` (long, short edge limits), pad to a multiple of ``size_divisor``. Each image
      gets its own size; ``size`` is only the size the artifact was verified at.
    """

    size: tuple[int, int]  # (H, W)
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    resize: str = "crop"
    scale: tuple[int, int] = DEFAULT_SCALE  # mmdet only: (long edge limit, short edge limit)
    size_divisor: int = 32  # mmdet only

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}")

    def __call__(self, image) -> np.ndarray:
        """PIL image (any mode) → float32 array (3, H, W)."""
        from PIL import Image

        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR,
                    "nearest": Image.NEAREST}[self.interpolation]
        image = _to_rgb(image)
        h, w = self.size
        if self.resize == "mmdet":
            return resize_and_pad(np.asarray(image), self.mean, self.std, self.scale, self.size_divisor)
        if self.resize == "letterbox":
            return self._letterbox(image, resample)
        scale = max(h / image.height, w / image.width) / self.crop_pct
        rh, rw = max(h, math.ceil(image.height * scale - 1e-6)), max(w, math.ceil(image.width * scale - 1e-6))
        if (rh, rw) != (image.height, image.width):
            image = image.resize((rw, rh), resample)
        top, left = (rh - h) // 2, (rw - w) // 2
        image = image.crop((left, top, left + w, top + h))
        return self._normalised(image)

    def _letterbox(self, image, resample) -> np.ndarray:
        h, w = self.size
        scale = min(h / image.height, w / image.width)
        rh, rw = min(h, max(1, round(image.height * scale))), min(w, max(1, round(image.width * scale)))
        if (rh, rw) != (image.height, image.width):
            image = image.resize((rw, rh), resample)
        canvas = np.zeros((3, h, w), np.float32)
        canvas[:, :rh, :rw] = self._normalised(image)
        return canvas

    def _normalised(self, image) -> np.ndarray:
        x = np.asarray(image, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.resize != "mmdet":  # only mmdet's resize has edge limits and a pad divisor
            del d["scale"], d["size_divisor"]
        return d


def _to_rgb(image):
    """Any PIL mode → RGB the way training pipelines do it (``convert("RGB")``, alpha dropped);
    16-bit and 32-bit integer grayscale is rescaled to 8 bits first."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        from PIL import Image

        arr = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageSet:
    """Image paths with optional integer labels (ImageFolder: sorted class folder names)."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...] | None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, n: int) -> "ImageSet":
        """Deterministic subset of ``n`` images spread evenly over the (class-sorted) list."""
        if n >= len(self.paths):
            return self
        idx = np.linspace(0, len(self.paths) - 1, n).round().astype(int)
        labels = None if self.labels is None else tuple(self.labels[i] for i in idx)
        return ImageSet(self.root, tuple(self.paths[i] for i in idx), labels, self.classes)


def open_image_set(source: str | Path, label_map: str | Path | None = None) -> ImageSet:
    """Open an ImageFolder (class sub-folders), a flat folder of images, or a .txt list of paths.

    Raises:
        UserInputError: the source is missing, empty or holds no images.
    """
    root = Path(source)
    if not root.exists():
        raise UserInputError(f"image set not found: {root}")
    if root.is_file():
        if root.suffix.lower() != ".txt":
            raise UserInputError(f"{root} is a file but not a .txt list of image paths")
        lines = [ln.strip() for ln in root.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        paths = tuple((root.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines)
        if not paths:
            raise UserInputError(f"image list {root} is empty")
        return ImageSet(root, paths, None, None)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        classes = tuple(p.name for p in subdirs)
        if label_map is not None:
            classes = _apply_label_map(classes, Path(label_map))
        paths, labels = [], []
        for label, d in enumerate(subdirs):
            for f in sorted(d.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(f)
                    labels.append(label)
        if not paths:
            raise UserInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders of {root}")
        return ImageSet(root, tuple(paths), tuple(labels), classes)
    paths = tuple(sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
    if not paths:
        raise UserInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return ImageSet(root, paths, None, None)


def _apply_label_map(classes: tuple[str, ...], path: Path) -> tuple[str, ...]:
    """A JSON map folder name → class name, kept in sorted-folder order."""
    try:
        mapping = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read label map {path}: {e}") from None
    return tuple(str(mapping.get(c, c)) for c in classes)


def iter_batches(images: ImageSet, preprocess: Preprocess, batch_size: int,
                 advance: Callable[[int], None] | None = None) -> Iterator[tuple[np.ndarray, list[int], list[Path]]]:
    """Decode and preprocess ``batch_size`` images at a time, so large sets never sit in memory.

    Yields (array (n, 3, H, W), indices into ``images`` of the decoded images, paths that
    could not be decoded). ``advance(k)`` is called as images are read (progress bars).
    """
    for start in range(0, len(images.paths), batch_size):
        arrays, kept, skipped = [], [], []
        for i in range(start, min(start + batch_size, len(images.paths))):
            try:
                arrays.append(preprocess(read_image(images.paths[i])))
                kept.append(i)
            except (UnreadableImage, ValueError):  # ValueError: a pixel mode Pillow cannot convert
                skipped.append(images.paths[i])
        if advance:
            advance(len(kept) + len(skipped))
        empty = np.zeros((0, 3, *preprocess.size), np.float32)
        yield (np.stack(arrays) if arrays else empty), kept, skipped


def load_batch(images: ImageSet, preprocess: Preprocess,
               advance: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[Path], list[int]]:
    """Decode and preprocess a (small) set at once; unreadable files are skipped and listed.

    Returns:
        (array (N, 3, H, W), skipped paths, indices of the images kept).

    Raises:
        UserInputError: no image could be decoded.
    """
    arrays, skipped, kept = [], [], []
    for x, k, s in iter_batches(images, preprocess, 64, advance):
        arrays.append(x)
        kept += k
        skipped += s
    if not kept:
        raise UserInputError(f"none of the {len(images)} images in {images.root} could be decoded")
    return np.concatenate(arrays), skipped, kept
