"""Running a model or a runner over images in memory-sized batches; accuracy entries."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import ImageSet, Preprocess, iter_batches
from ..errors import UserInputError
from ..model.rmt import attention_in_chunks
from ..rewrite import attention_bytes
from .accuracy import topk_accuracy

__all__ = ["EvalSet", "batch_size_for", "reference_logits", "runner_logits", "reference_features", "runner_outputs",
           "accuracy_entry"]

BATCH_MEMORY = 1 << 30  # attention matrices of one batch


def batch_size_for(cfg, size: tuple[int, int]) -> int:
    """Images per batch: up to 32, fewer when attention matrices get large."""
    per_image = 3 * attention_bytes(cfg, size)  # logits, softmax and a temporary
    return max(1, min(32, BATCH_MEMORY // per_image))


def reference_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The PyTorch model's logits on ``x``, its attention in chunks (``model.rmt.attention_in_chunks``):
    at detection sizes the reference then needs about as much memory as the chunked artifacts."""
    batch = batch_size_for(model.cfg, tuple(x.shape[2:]))
    with torch.inference_mode(), attention_in_chunks(model):
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy()
                               for i in range(0, len(x), batch)])


def runner_logits(runner, x: np.ndarray, dynamic_batch: bool, cfg) -> np.ndarray:
    name = runner.input_names()[0]
    step = batch_size_for(cfg, tuple(x.shape[2:])) if dynamic_batch else 1
    return np.concatenate([next(iter(runner.infer({name: x[i:i + step]}).values()))
                           for i in range(0, len(x), step)])


def reference_features(model: torch.nn.Module, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A backbone's feature maps on ``x``, by output name, batched like ``reference_logits``."""
    batch = batch_size_for(model.cfg, tuple(x.shape[2:]))
    parts: list[tuple] = []
    with torch.inference_mode(), attention_in_chunks(model):
        for i in range(0, len(x), batch):
            parts.append(tuple(t.numpy() for t in model(torch.from_numpy(x[i:i + batch]))))
    return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}


def runner_outputs(runner, x: np.ndarray, dynamic_batch: bool, cfg) -> dict[str, np.ndarray]:
    """Every output of ``runner`` on ``x``, by name (one image at a time unless ``dynamic_batch``)."""
    name = runner.input_names()[0]
    step = batch_size_for(cfg, tuple(x.shape[2:])) if dynamic_batch else 1
    parts = [runner.infer({name: x[i:i + step]}) for i in range(0, len(x), step)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


@dataclass
class EvalSet:
    """A labelled image set streamed in batches; only logits are kept in memory."""

    images: ImageSet
    preprocess: Preprocess
    batch: int
    labels: np.ndarray | None = None  # of the images that decoded
    reference: np.ndarray | None = None  # PyTorch FP32 logits
    skipped: tuple[Path, ...] = ()

    def logits(self, predict, advance) -> np.ndarray:
        out, kept, skipped = [], [], []
        for x, k, s in iter_batches(self.images, self.preprocess, self.batch, advance):
            if len(x):
                out.append(predict(x))
            kept += k
            skipped += s
        if not kept:
            raise UserInputError(f"none of the {len(self.images)} images in {self.images.root} could be decoded")
        if self.labels is None:
            self.labels = np.asarray(self.images.labels)[kept]
            self.skipped = tuple(skipped)
        elif len(kept) != len(self.labels):  # files changed between passes
            raise RuntimeError(f"{self.images.root}: {len(kept)} images decoded now, {len(self.labels)} "
                               "in the reference pass; did the folder change during the run?")
        return np.concatenate(out)


def accuracy_entry(logits: np.ndarray, eval_set: EvalSet) -> dict:
    labels, ref_logits = eval_set.labels, eval_set.reference
    acc, ref = topk_accuracy(logits, labels), topk_accuracy(ref_logits, labels)
    return {
        **acc,
        "top1_fp32": ref["top1"],
        "top5_fp32": ref["top5"],
        "drop": round(ref["top1"] - acc["top1"], 3),
        "agreement": float(np.mean(logits.argmax(1) == ref_logits.argmax(1))),
        "samples": int(len(labels)),
    }
