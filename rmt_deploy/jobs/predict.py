"""Run an exported artifact on images: ``rmt_deploy.load(path).predict(images)``.

The artifact's own metadata says how to prepare an image (input size, resize/centre-crop,
mean/std), so a prediction here matches what the export verified. Every target's runner takes
the normalised NCHW tensor (Core ML image-input packages get pixels from their runner).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..bench.portability import int8_cpu_warning
from ..bench.schema import failure_reason
from ..data.images import Preprocess, UnreadableImage, read_image
from ..errors import PROGRAMMING_ERRORS, UserInputError
from ..sizes import InputSizes
from .plan import parse_resize_scale
from ..targets import Target, check_execution, target_for_path

__all__ = ["Model", "Prediction", "preprocess_from_metadata"]


@dataclass
class Prediction:
    """One input's result: the ``topk`` classes, best first, or why it was skipped."""

    source: str  # the path, or "<PIL image 0>" / "<array 0>"
    indices: list[int] = field(default_factory=list)
    names: list[str | None] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None  # set when the input could not be read; the other fields are empty

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)


def preprocess_from_metadata(metadata: dict, input_shape: list) -> Preprocess | None:
    """The preprocessing an rmt-deploy artifact records; None for artifacts without it."""
    if not metadata.get("mean") or not metadata.get("std"):
        return None
    if metadata.get("input_size"):
        size = tuple(int(v) for v in metadata["input_size"].split("x"))
    else:
        size = tuple(input_shape[-2:])
    resize = metadata.get("resize") if metadata.get("resize") in ("letterbox", "mmdet") else "crop"
    extra = {}
    if resize == "mmdet":  # mmdet's own test resize: each image at its own padded size
        extra = {"scale": parse_resize_scale(metadata["resize_scale"]),
                 "size_divisor": int(metadata.get("size_divisor", 32))}
    return Preprocess(size, crop_pct=float(metadata.get("crop_pct", 0.875)),
                      mean=tuple(json.loads(metadata["mean"])), std=tuple(json.loads(metadata["std"])),
                      interpolation="bicubic" if resize == "crop" else "bilinear", resize=resize, **extra)


class Model:
    """An artifact and the runner that executes it; use as a context manager or call ``close``."""

    def __init__(self, path: Path, target: Target, info: dict, preprocess: Preprocess, runner) -> None:
        self.path, self.target, self.info, self.preprocess, self.runner = path, target, info, preprocess, runner
        self.metadata: dict = info.get("metadata") or {}
        names = self.metadata.get("class_names")
        self.class_names: list[str] | None = json.loads(names) if names else None
        fixed = info["input_shape"][0]
        profile = self.metadata.get("profile")  # TensorRT engines: (min, opt, max) batch
        self.max_batch: int | None = (int(fixed or 1) if not info["dynamic_batch"]
                                      else int(profile[2]) if isinstance(profile, (list, tuple)) else None)
        # Why this CPU computes other results than the artifact was verified to (an ISA its metadata
        # names, x86 int16 saturation), or None.
        self.cpu_warning: str | None = int8_cpu_warning(path, target, metadata=self.metadata)

    @classmethod
    def open(cls, path: Path, runtime: str | None = None, threads: int | None = None,
             preprocess: Preprocess | None = None, execution: str = "verified") -> Model:
        check_execution(execution)
        if threads is not None and threads < 1:
            raise UserInputError(f"--threads (threads=) must be at least 1, not {threads}")
        if not path.exists():
            raise UserInputError(f"artifact not found: {path}")
        target = target_for_path(path)
        reason = target.unavailable_reason()
        if reason:
            raise UserInputError(f"{path.name}: cannot run {target.title} artifacts here: {reason}")
        try:
            info = target.describe(path)
        except (UserInputError, *PROGRAMMING_ERRORS):  # ours are bugs, not bad input
            raise
        except Exception as e:  # noqa: BLE001 — a runtime refusing a damaged file: bad input, in one line
            raise UserInputError(f"{path}: not a readable {target.title} artifact ({failure_reason(e)})") from e
        pre = preprocess or preprocess_from_metadata(info.get("metadata") or {}, info["input_shape"])
        if pre is None:
            raise UserInputError(f"{path.name} has no rmt-deploy metadata (input size, mean/std); pass "
                                 "preprocess=Preprocess((H, W), mean=..., std=...) to load()")
        if runtime is not None and not target.accepts_runtime(runtime):
            raise UserInputError(target.runtime_error(path, runtime))
        runner = target.load(path, threads, runtime, execution=execution)
        try:
            runner.activate()
        except (UserInputError, *PROGRAMMING_ERRORS):
            raise
        except Exception as e:  # noqa: BLE001 — a runtime that cannot take the artifact is one line too
            raise UserInputError(f"{path.name}: {runner.name} cannot load it ({failure_reason(e)})") from e
        return cls(path, target, info, pre, runner)

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<rmt_deploy.Model {self.path.name} ({self.target.name}, {self.runner.name})>"

    # -- inputs ----------------------------------------------------------------------------
    def tensor(self, image) -> np.ndarray:
        """One input → the normalised (3, H, W) float32 array the artifact takes.

        Accepts a path, a PIL image, an HWC uint8 array, or an already-normalised (3, H, W)
        float array (resized when its size differs from the artifact's).
        """
        from PIL import Image

        if isinstance(image, (str, Path)):
            return self.preprocess(read_image(image))
        if isinstance(image, Image.Image):
            return self.preprocess(image)
        array = np.asarray(image)
        if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))):
            return self.preprocess(Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array))
        if array.ndim == 3 and array.shape[0] == 3 and np.issubdtype(array.dtype, np.floating):
            if self.preprocess.resize == "mmdet":  # already prepared at its own size
                return array.astype(np.float32)
            return _resized(array.astype(np.float32), self.preprocess.size)
        raise ValueError(f"an array of shape {array.shape} and dtype {array.dtype} is no image: pass HxW or HxWx3 "
                         "uint8 pixels, or a normalised 3xHxW float array")

    def features(self, image) -> dict[str, np.ndarray]:
        """A backbone's feature maps for one input (see ``tensor``), by output name, each (1, C, h, w).

        With mmdet's resize recorded (``export --resize mmdet``) the image keeps its own padded size;
        a size the artifact does not take is a UserInputError naming the sizes it takes.
        """
        if self.metadata.get("task") != "backbone":
            raise UserInputError(f"{self.path.name} is a classifier; use predict() or logits()")
        x = self.tensor(image)
        taken = InputSizes.of(self.metadata, self.preprocess.size)
        taken.check(tuple(x.shape[1:]), f"{_label(image, 0)}: input",
                    "re-export with --min-size/--max-size covering it")
        return self.runner.infer({self.runner.input_names()[0]: x[None]})

    def output_names(self) -> list[str]:
        """The artifact's outputs as its metadata records them (``logits``, or ``feat0`` … for backbones)."""
        outputs = self.metadata.get("outputs")
        return [o["name"] for o in json.loads(outputs)] if outputs else ["logits"]

    # -- running -----------------------------------------------------------------------------
    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) normalised → (N, classes), in batches the artifact accepts."""
        name = self.runner.input_names()[0]
        step = self.max_batch or len(x)
        out = [next(iter(self.runner.infer({name: x[i:i + step]}).values())) for i in range(0, len(x), step)]
        return np.concatenate(out)

    def predict(self, images, topk: int = 5, batch: int = 8, advance=None) -> list[Prediction]:
        """Top-``topk`` classes per input, best first, with softmax probabilities.

        ``images``: one input or a list (paths, PIL images, arrays; see ``tensor``), or an
        (N, 3, H, W) normalised float batch. Unreadable files are skipped: their Prediction
        has ``error`` set. ``advance(n)`` is called as inputs are done (progress bars).
        """
        if topk < 1:
            raise UserInputError("topk must be at least 1")
        if self.metadata.get("task") == "backbone":
            raise UserInputError(f"{self.path.name} is a backbone (feature maps {', '.join(self.output_names())}); "
                                 "predict is for classifiers: use model.features(image) for its maps")
        items = _as_list(images)
        results: list[Prediction | None] = [None] * len(items)
        for start in range(0, len(items), max(1, batch)):
            chunk = list(range(start, min(start + max(1, batch), len(items))))
            arrays, kept = [], []
            for i in chunk:
                try:
                    arrays.append(self.tensor(items[i]))
                    kept.append(i)
                except (ValueError, UnreadableImage) as e:  # an array that is no image, a file that is none
                    results[i] = Prediction(_label(items[i], i), error=str(e))
            if arrays:
                for i, row in zip(kept, self.logits(np.stack(arrays))):
                    results[i] = self._top(_label(items[i], i), row, topk)
            if advance:
                advance(len(chunk))
        return results

    def _top(self, source: str, logits: np.ndarray, topk: int) -> Prediction:
        z = logits.astype(np.float64) - logits.max()
        probs = np.exp(z) / np.exp(z).sum()
        order = np.argsort(-probs)[:topk]
        names = [self.class_names[i] if self.class_names and i < len(self.class_names) else None for i in order]
        return Prediction(source, [int(i) for i in order], names, [round(float(probs[i]), 6) for i in order])


def _as_list(images) -> list:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (str, Path, np.ndarray)) or hasattr(images, "getpixel"):  # one input
        return [images]
    return list(images)


def _label(item, i: int) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    return f"<{'PIL image' if hasattr(item, 'getpixel') else 'array'} {i}>"


def _resized(chw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if chw.shape[1:] == tuple(size):
        return chw
    from PIL import Image

    h, w = size
    return np.stack([np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.BILINEAR)) for c in chw])
