"""Shared fixtures: randomised models whose every folded quantity matters, real images."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rmt_deploy.bundled import bundled_images, bundled_weights
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.model.rmt import RMT, create_model

from .seeded import seeded_values

REPO = Path(__file__).resolve().parents[1]
# Keys and shapes of the official qhfan/RMT checkpoints (copied from shared/reference).
REFERENCE_SHAPES = REPO / "tests" / "data" / "rmt_state_dict_shapes.json"
# The installed `rmt-deploy` command of this environment.
EXE = shutil.which("rmt-deploy") or str(Path(sys.executable).with_name("rmt-deploy"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`rmt-deploy ARGS` in a fresh process, as a user runs it (no RMT_DEPLOY_DEBUG, wide terminal)."""
    env = {k: v for k, v in os.environ.items() if k != "RMT_DEPLOY_DEBUG"}
    env["COLUMNS"] = "200"
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def mm_checkpoint(path, heads: tuple[str, ...], variant: str = "rmt-t", wrapper: str = "state_dict"):
    """An mmdet/mmseg-style checkpoint at ``path``: ``backbone.*`` beside a neck and ``heads``; returns the backbone."""
    backbone = create_backbone(variant)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({"neck.lateral_convs.0.conv.weight": torch.zeros(256, 64, 1, 1)})
    for head in heads:
        state[f"{head}.conv.weight"] = torch.zeros(8, 8, 3, 3)
    torch.save({wrapper: state, "meta": {"epoch": 12, "mmdet_version": "2.25.0"},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, path)
    return backbone


def pytest_configure(config) -> None:
    """Each xdist worker gets its own share of the CPUs (its affinity; subprocesses inherit it), so
    two workers' runtimes never run more threads than there are cores: spinning thread pools on
    shared cores made the suite about 1.6x slower (two demo exports: 51 s together, 31 s pinned)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = set(cores[int(worker.removeprefix("gw")) % count::count]) if len(cores) >= count else set()
    if share:
        os.sched_setaffinity(0, share)
        torch.set_num_threads(len(share))


def randomize_(model: RMT, seed: int = 0) -> RMT:
    """Give BN statistics, LayerNorm affines, biases and layer scales non-trivial values.

    Default init leaves BN as identity and layer scale at 1e-6, which would hide bugs in
    BN folding and layer-scale folding. Rotary angles and decays keep their official values.

    The values come from numpy's PCG64 in float64, cast to float32: the same bits on every CPU.
    torch's seeded ``randn``/``rand`` are not (their vectorised kernels differ by ISA), and the
    goldens (``tests/data/rmt_golden.npz``) pin these weights by digest.
    """
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and ".Relpos." not in name:
                t.copy_(torch.from_numpy(seeded_values(name, tuple(t.shape), seed)))
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
