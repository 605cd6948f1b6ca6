"""Shared fixtures: randomised models whose every folded quantity matters, real images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rmt_deploy.bundled import bundled_images, bundled_weights
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.model.rmt import RMT, create_model

REPO = Path(__file__).resolve().parents[1]
# Keys and shapes of the official qhfan/RMT checkpoints (copied from shared/reference).
REFERENCE_SHAPES = REPO / "tests" / "data" / "rmt_state_dict_shapes.json"


def randomize_(model: RMT, seed: int = 0) -> RMT:
    """Give BN statistics, LayerNorm affines, biases and layer scales non-trivial values.

    Default init leaves BN as identity and layer scale at 1e-6, which would hide bugs in
    BN folding and layer-scale folding. Rotary angles and decays keep their official values.
    """
    gen = torch.Generator().manual_seed(seed)

    def rnd(t, scale):
        return torch.randn(t.shape, generator=gen) * scale

    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or ".Relpos." in name:
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(rnd(t, 0.1))
            elif "gamma_" in name:
                t.copy_(0.2 + 0.2 * torch.rand(t.shape, generator=gen))
            elif t.ndim == 1:  # LayerNorm / BatchNorm weights
                t.copy_(1.0 + rnd(t, 0.1))
            elif name.startswith(("head.", "aux_head.")):  # logits O(1-10), like a trained net
                t.copy_(rnd(t, 3.0 / t.shape[1] ** 0.5))
            elif t.ndim == 2:  # linears: the official init scale keeps the residual stream bounded
                t.copy_(rnd(t, 0.02))
            elif t.shape[1] == 1:  # depthwise convs sit on residual paths: keep them small
                t.copy_(rnd(t, 0.05))
            else:  # stem and merge convs
                t.copy_(rnd(t, 1.0 / t[0].numel() ** 0.5))
    return model.eval()


def random_model(name: str, seed: int = 0, **overrides) -> RMT:
    torch.manual_seed(seed)
    return randomize_(create_model(name, **overrides), seed)


@pytest.fixture(scope="session")
def reference_shapes() -> dict:
    return json.loads(REFERENCE_SHAPES.read_text())


@pytest.fixture(scope="session")
def demo_weights() -> Path:
    path = bundled_weights()
    assert path.exists(), "bundled demo checkpoint missing; run tools/make_demo.py"
    return path


def real_images(size: tuple[int, int], n: int = 6) -> np.ndarray:
    """n bundled validation digits (real images) preprocessed to ``size``."""
    images = open_image_set(bundled_images("val")).subset(n)
    x, _, _ = load_batch(images, Preprocess(size, crop_pct=1.0))
    return x
