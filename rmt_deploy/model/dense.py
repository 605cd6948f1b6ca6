"""Detection / segmentation checkpoints (mmdet, mmseg) → the RMT backbone they hold.

The backbone's weights sit under ``backbone.`` beside ``neck.*`` and the heads; they are
loaded strictly into ``RMTBackbone`` (the other parts are listed, not loaded). A classification
checkpoint works too: its stem and stages become a backbone without ``extra_norms`` (raw stage
outputs, like a ``features_only`` model), and its head is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserInputError
from .backbone import RMTBackbone, create_backbone
from .checkpoint import Checkpoint, adopt_weights, mismatch_summary, read_checkpoint, sha256_file, split_dense
from .variants import VARIANTS, UnknownVariantError, resolve_variant

__all__ = ["LoadedBackbone", "load_backbone", "detect_backbone_variant", "parse_out_indices"]

_CLASSIFIER_ONLY = ("proj.", "norm.", "head.", "aux_head.")


@dataclass
class LoadedBackbone:
    model: RMTBackbone
    variant: str
    task: str  # what the checkpoint was: detection / segmentation / backbone / classification
    ignored: list[str]  # parts of the checkpoint not loaded (neck, heads, the classifier head)
    checkpoint: Checkpoint
    sha256: str

    @property
    def features_only(self) -> bool:
        """No extra_norms in the checkpoint: the outputs are the raw stage outputs."""
        return self.model.extra_norms is None


def parse_out_indices(text: str) -> tuple[int, ...]:
    """'1,2,3' → (1, 2, 3); each index a stage 0-3, increasing."""
    try:
        indices = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserInputError(f"--out-indices '{text}' must be stage numbers 0-3, e.g. 1,2,3") from None
    if not indices or any(i not in (0, 1, 2, 3) for i in indices) or list(indices) != sorted(set(indices)):
        raise UserInputError(f"--out-indices '{text}': stages are 0-3 (strides 4, 8, 16, 32), increasing, e.g. 0,1,2,3")
    return indices


def _expected(variant: str, extra_norms: bool) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = create_backbone(variant, extra_norms=extra_norms)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def detect_backbone_variant(state: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """(variant, has extra_norms) whose keys and shapes equal ``state``'s.

    Raises:
        UserInputError: no variant fits; names the closest and its differences.
    """
    extra = any(k.startswith("extra_norms.") for k in state)
    best, best_common, best_diff, best_total = None, -1, "", 1
    for variant, cfg in VARIANTS.items():
        if cfg.token_label:
            continue  # same trunk as the plain variant
        expected = _expected(variant, extra)
        diff = mismatch_summary(state, expected)
        if not diff:
            return variant, extra
        common = sum(1 for k, s in expected.items() if k in state and tuple(state[k].shape) == s)
        if common > best_common:
            best, best_common, best_diff, best_total = variant, common, diff, len(expected)
    if best_common < 0.5 * best_total:
        raise UserInputError("the backbone is not an RMT: its keys match no variant "
                             f"({best_common}/{best_total} keys of the closest, {best})")
    raise UserInputError(f"the backbone's weights match no RMT variant exactly; closest is {best}: {best_diff}")


def load_backbone(path: str | Path, arch: str | None = None,
                  out_indices: tuple[int, ...] = (0, 1, 2, 3)) -> LoadedBackbone:
    """Read ``path`` (a detection, segmentation, backbone or classification checkpoint) and load
    its backbone strictly.

    Raises:
        UserInputError: unreadable file, unknown ``arch``, keys or shapes that do not fit.
    """
    if not out_indices or list(out_indices) != sorted(set(out_indices)) or not set(out_indices) <= {0, 1, 2, 3}:
        raise UserInputError(f"out_indices {tuple(out_indices)}: stages are 0-3 (strides 4, 8, 16, 32), increasing")
    ckpt = read_checkpoint(path)
    state, task, ignored = split_dense(ckpt.state_dict)
    if task == "classification":
        ignored = sorted({k.split(".", 1)[0] for k in state if k.startswith(_CLASSIFIER_ONLY)})
        state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_ONLY)}
    if arch:
        try:
            variant = resolve_variant(arch)
        except UnknownVariantError as e:
            raise UserInputError(str(e)) from None
        extra = any(k.startswith("extra_norms.") for k in state)
        diff = mismatch_summary(state, _expected(variant, extra))
        if diff:
            raise UserInputError(f"the backbone in {ckpt.path.name} does not fit {variant}: {diff}")
    else:
        variant, extra = detect_backbone_variant(state)
    model = adopt_weights(lambda: create_backbone(variant, out_indices, extra_norms=extra), state)
    return LoadedBackbone(model, variant, task, ignored, ckpt, sha256_file(ckpt.path))
