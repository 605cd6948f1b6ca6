"""Checkpoint reading, architecture detection and strict loading.

Only data is ever deserialised: ``torch.load(weights_only=True)`` (plus the few plain
containers official training scripts store, e.g. ``argparse.Namespace``) or safetensors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserInputError
from .rmt import RMT, create_model
from .variants import VARIANTS, UnknownVariantError, resolve_variant

__all__ = ["Checkpoint", "LoadedModel", "read_checkpoint", "checkpoint_filter_fn", "inspect_checkpoint",
           "detect_variant", "load_model", "sha256_file", "split_dense", "adopt_weights", "mismatch_summary", "CHECKPOINT_SUFFIXES"]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".bin", ".ckpt", ".safetensors")
_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")
# mmdet / mmseg checkpoints: the backbone's weights under "backbone.", beside the neck and heads.
_BACKBONE_PREFIX = "backbone."
_DETECTION_PARTS = ("rpn_head", "roi_head", "bbox_head", "mask_head")
_SEGMENTATION_PARTS = ("decode_head", "auxiliary_head")


@dataclass
class Checkpoint:
    """What a checkpoint file holds, before it meets a model."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    source_key: str | None  # where the weights were nested, e.g. "model"
    other_entries: list[str]  # training-only entries that were ignored
    metadata: dict[str, str]  # safetensors metadata (our demo stores arch, input size, …)
    hints: dict[str, object] = field(default_factory=dict)  # e.g. input_size from stored args


@dataclass
class LoadedModel:
    model: RMT
    variant: str
    num_classes: int
    checkpoint: Checkpoint
    sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file without running any code from it.

    Raises:
        UserInputError: missing, empty, truncated or corrupt file, or a pickle that would
            need to execute code to load.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UserInputError(f"checkpoint {path} is a folder; pass the weights file inside it")
    if not path.is_file():  # a pipe or device: reading it could block forever
        raise UserInputError(f"checkpoint {path} is not a regular file (a pipe, socket or device); pass the weights file")
    if path.stat().st_size == 0:
        raise UserInputError(f"checkpoint {path} is empty (0 bytes); re-download or re-save it")
    if path.name.endswith(".safetensors"):
        obj, metadata = _read_safetensors(path)
    else:
        obj, metadata = _read_torch(path), {}
    state_dict, key, others, hints = checkpoint_filter_fn(obj)
    if not state_dict:
        raise UserInputError(f"checkpoint {path} holds no tensors; expected an RMT state dict")
    return Checkpoint(path, state_dict, key, others, metadata, hints)


def _read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserInputError(f"checkpoint {path} is not a readable safetensors file "
                             f"(truncated or corrupt?): {_first_line(e)}") from None
    return tensors, metadata


def _read_torch(path: Path):
    import numpy as np

    # Plain data containers that official training scripts save next to the weights.
    # They hold no code; everything else stays forbidden by weights_only=True.
    allowed = [argparse.Namespace, np.dtype, np.ndarray, np.core.multiarray.scalar,
               np.core.multiarray._reconstruct, type(np.dtype(np.float64)), type(np.dtype(np.int64))]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = _first_line(e)
        if "GLOBAL " in str(e):  # a class/function reference: loading would call code
            culprit = _unsupported_global(str(e))
            raise UserInputError(
                f"refusing to load {path}: it contains pickled objects{culprit} that would run code "
                "when loaded; re-save only the weights (torch.save(model.state_dict(), ...)) or use "
                ".safetensors") from None
        raise UserInputError(f"checkpoint {path} is truncated or corrupt (not a PyTorch "
                             f"checkpoint?): {msg}") from None
    except Exception as e:  # noqa: BLE001 — any other parse failure means a damaged file
        raise UserInputError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: "
                             f"{_first_line(e)}); re-download or re-save it") from None


def _unsupported_global(text: str) -> str:
    name = text.split("GLOBAL ", 1)[1].split()[0].rstrip(".,:")
    return f" ({name})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def checkpoint_filter_fn(obj) -> tuple[dict[str, torch.Tensor], str | None, list[str], dict]:
    """Unwrap a loaded checkpoint into an official-layout state dict. Pure; no model needed.

    Accepts a bare state dict or one nested under ``model`` / ``state_dict`` / ``model_ema``
    (first found wins), with or without a DDP ``module.`` prefix.

    Returns:
        (state dict, wrapper key or None, names of ignored top-level entries, hints).
    """
    if not isinstance(obj, dict):
        raise UserInputError(f"checkpoint holds a {type(obj).__name__}, not a state dict; "
                             "save model.state_dict() instead of the model object")
    hints: dict[str, object] = {}
    args = obj.get("args")
    if isinstance(args, argparse.Namespace) and getattr(args, "input_size", None):
        hints["input_size"] = int(args.input_size)
    key = None
    inner = obj
    if not _is_tensor_dict(obj):
        for k in _WRAPPER_KEYS:
            if isinstance(obj.get(k), dict) and _is_tensor_dict(obj[k]):
                key, inner = k, obj[k]
                break
    others = sorted(k for k in obj if k != key) if key else []
    state = {}
    for name, value in inner.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("module.", "_orig_mod."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        state[name] = value
    return state, key, others, hints


def split_dense(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """A state dict → (backbone weights, task, names of the other parts).

    ``task`` is "classification" (no ``backbone.`` keys; the state dict is returned as is),
    "detection" (mmdet heads present), "segmentation" (mmseg heads) or "backbone" (only a
    backbone, perhaps with a neck). The other parts are listed by their top-level name.
    """
    if not any(k.startswith(_BACKBONE_PREFIX) for k in state):
        return state, "classification", []
    backbone = {k[len(_BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(_BACKBONE_PREFIX)}
    parts = sorted({k.split(".", 1)[0] for k in state if not k.startswith(_BACKBONE_PREFIX)})
    task = ("detection" if set(parts) & set(_DETECTION_PARTS) else
            "segmentation" if set(parts) & set(_SEGMENTATION_PARTS) else "backbone")
    return backbone, task, parts


def _is_tensor_dict(d: dict) -> bool:
    values = list(d.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= 0.5 * len(values)


def _expected_shapes(variant: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = create_model(variant, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _num_classes(state: dict[str, torch.Tensor]) -> int | None:
    head = state.get("head.weight")
    return int(head.shape[0]) if head is not None and head.ndim == 2 else None


def detect_variant(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """Find the variant whose keys and shapes equal the state dict's.

    Raises:
        UserInputError: no variant matches; the message names the closest and its differences.
    """
    num_classes = _num_classes(state) or 1000
    # Building a (meta) model per variant costs ~0.6 s each; try the plausible ones first.
    plausible = [v for v in VARIANTS if _signature(VARIANTS[v]) == _state_signature(state)]
    for variant in plausible:
        if not mismatch_summary(state, _expected_shapes(variant, num_classes)):
            return variant, num_classes
    best, best_score, best_diff, best_counts = None, -1.0, "", ""
    for variant in VARIANTS:
        expected = _expected_shapes(variant, num_classes)
        diff = mismatch_summary(state, expected)
        if not diff:
            return variant, num_classes
        common = sum(1 for k, s in expected.items() if k in state and tuple(state[k].shape) == s)
        score = common / max(len(expected), len(state))
        if score > best_score:
            best, best_score, best_diff = variant, score, diff
            best_counts = f"{common}/{len(expected)} keys"
    if best_score < 0.5:
        raise UserInputError("checkpoint is not an RMT classifier: its keys match no variant "
                             f"(closest {best}: {best_diff})")
    raise UserInputError(f"checkpoint matches no RMT variant exactly; closest is {best} "
                         f"({best_counts} fit): {best_diff}")


def _signature(cfg) -> tuple:
    return (cfg.embed_dims[0], tuple(cfg.depths), cfg.token_label)


def _state_signature(state: dict[str, torch.Tensor]) -> tuple:
    stem = state.get("patch_embed.proj.9.weight")
    depths = []
    for i in range(len(state)):
        prefix = f"layers.{i}.blocks."
        blocks = {k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)}
        if not blocks:
            break
        depths.append(len(blocks))
    return (None if stem is None else int(stem.shape[0]), tuple(depths), "aux_head.weight" in state)


def mismatch_summary(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> str:
    """'' when keys and shapes agree, otherwise one line listing missing/unexpected/mis-shaped keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [f"{k} {tuple(state[k].shape)}≠{expected[k]}" for k in expected
              if k in state and tuple(state[k].shape) != expected[k]]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shaped)):
        if items:
            shown = ", ".join(items[:3]) + (f", … (+{len(items) - 3})" if len(items) > 3 else "")
            parts.append(f"{len(items)} {label}: {shown}")
    return "; ".join(parts)


def load_model(path: str | Path, arch: str | None = None) -> LoadedModel:
    """Read ``path``, detect (or take ``arch``), build the model and load it with strict=True.

    Raises:
        UserInputError: unreadable file, unknown ``arch``, or keys/shapes that do not fit.
    """
    ckpt = read_checkpoint(path)
    state = ckpt.state_dict
    backbone, task, parts = split_dense(state)
    if task != "classification":
        beside = f" beside {', '.join(parts)}" if parts else ""
        raise UserInputError(f"{ckpt.path.name} holds its weights under 'backbone.'{beside} (a {task} checkpoint); "
                             "it has no classification head: export its backbone with --task backbone")
    arch = arch or ckpt.metadata.get("rmt_deploy.arch")
    if arch:
        try:
            variant = resolve_variant(arch)
        except UnknownVariantError as e:
            raise UserInputError(str(e)) from None
        num_classes = _num_classes(state) or 1000
        diff = mismatch_summary(state, _expected_shapes(variant, num_classes))
        if diff:
            raise UserInputError(f"checkpoint {ckpt.path.name} does not fit {variant}: {diff}")
    else:
        variant, num_classes = detect_variant(state)
    model = adopt_weights(lambda: create_model(variant, num_classes=num_classes), state)
    return LoadedModel(model, variant, num_classes, ckpt, sha256_file(ckpt.path))


def adopt_weights(build, state: dict[str, torch.Tensor]):
    """``build()`` on the meta device, then take ``state``'s tensors (strict, as float32), in eval
    mode: random-initialising 95M parameters only to overwrite them took ~10 s for rmt-l."""
    with torch.device("meta"):
        model = build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # fp16/bf16 files
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def metadata_json(ckpt: Checkpoint, key: str):
    """A JSON-encoded metadata entry of our own checkpoints, or None."""
    raw = ckpt.metadata.get(key)
    return None if raw is None else json.loads(raw)


def inspect_checkpoint(path: str | Path) -> dict:
    """What ``rmt-deploy inspect`` shows: architecture, size, classes, hints, other entries."""
    ckpt = read_checkpoint(path)
    backbone, task, parts = split_dense(ckpt.state_dict)
    try:
        if task == "classification":
            variant, num_classes = detect_variant(ckpt.state_dict)
        else:
            from .dense import detect_backbone_variant

            (variant, _), num_classes = detect_backbone_variant(backbone), None
        problem = None
    except UserInputError as e:
        variant, num_classes, problem = None, _num_classes(ckpt.state_dict), str(e)
    cfg = VARIANTS.get(variant) if variant else None
    params = sum(v.numel() for k, v in (backbone if task != "classification" else ckpt.state_dict).items()
                 if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))
                 and ".Relpos." not in k)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in ckpt.state_dict.values()})
    hint = ckpt.metadata.get("rmt_deploy.input_size") or ckpt.hints.get("input_size")
    return {
        "path": str(ckpt.path),
        "size_bytes": ckpt.path.stat().st_size,
        "sha256": sha256_file(ckpt.path),
        "format": "safetensors" if ckpt.path.name.endswith(".safetensors") else "torch",
        "weights_entry": ckpt.source_key,
        "other_entries": ckpt.other_entries,
        "tensors": len(ckpt.state_dict),
        "task": task,  # classification / detection / segmentation / backbone
        "other_parts": parts,  # detection / segmentation: neck and head modules beside the backbone
        "dtypes": dtypes,
        "params_m": round(params / 1e6, 3),
        "arch": variant,
        "arch_problem": problem,
        "num_classes": num_classes,
        "token_label": bool(cfg and cfg.token_label),
        "resolution_hint": str(hint) if hint else None,
        "resolution_rule": (f"any multiple of {cfg.stride} per side (--img-size HxW)" if cfg else None),
        "metadata": ckpt.metadata,
    }
