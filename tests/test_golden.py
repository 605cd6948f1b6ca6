"""Our model, its deploy form and the exported ONNX against outputs of the official qhfan/RMT code.

``tests/data/rmt_golden.npz`` holds what the official ``classfication_release`` /
``classification_token_label_release`` classifiers and the ``detect/`` backbone computed on a
fixed non-square input with our seeded random weights loaded strictly (``tools/make_golden.py``,
official commit 32ea214). Every other parity test compares against our own ``model/rmt.py``; this
one would catch a sign error in the decay, a swapped rotary half or a wrong pass order there
(measured on deliberately broken copies: 4e-3 to 5 away from these logits, against 1e-4 allowed).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import onnx_export

from .avx2 import qemu_missing
from .conftest import REFERENCE_SHAPES, random_model, randomize_

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = np.load(ROOT / "tests" / "data" / "rmt_golden.npz")
SIZE = (64, 96)
ATOL = 1e-4
CLASSIFIERS = ["rmt-t", "rmt-s", "rmt-b", "rmt-l", "rmt-s-tl"]


def _tool():
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "tools" / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WEIGHTS_DIGEST = _tool().weights_digest


def _seeded(name: str):
    model = random_model(name, seed=int(GOLDEN[f"{name}/seed"]))
    # The same weights the official model ran with, or the comparison would mean nothing.
    assert WEIGHTS_DIGEST(model.state_dict()) == str(GOLDEN[f"{name}/weights_sha256"]), \
        f"{name}: the seeded test weights changed; rerun tools/make_golden.py"
    return model


def _input() -> torch.Tensor:
    return torch.from_numpy(GOLDEN["input"])


def test_golden_file_is_small_and_complete():
    assert (ROOT / "tests" / "data" / "rmt_golden.npz").stat().st_size < 400_000
    assert GOLDEN["input"].shape == (2, 3, *SIZE)
    for name in CLASSIFIERS:
        logits = GOLDEN[f"{name}/logits"]
        assert logits.shape == (2, 1000) and np.isfinite(logits).all() and np.abs(logits).max() > 1


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_reference_and_deploy_form_match_the_official_code(name):
    model, want = _seeded(name), GOLDEN[f"{name}/logits"]
    with torch.inference_mode():
        ours = model(_input()).numpy()
        deploy = to_deploy(model, SIZE)(_input()).numpy()
    assert np.abs(ours - want).max() <= ATOL
    assert np.abs(deploy - want).max() <= ATOL


@pytest.mark.parametrize("encoding", ["generic", "onnxruntime"])
def test_onnx_artifacts_match_the_official_code(encoding, tmp_path):
    model = _seeded("rmt-t")
    path = onnx_export.export(to_deploy(model, SIZE, encoding=encoding), tmp_path / "m.onnx", SIZE,
                              dynamic_batch=True, metadata={})
    with onnx_target.TARGET.load(path, threads=2) as runner:
        got = runner.infer({onnx_export.INPUT_NAME: GOLDEN["input"]})[onnx_export.OUTPUT_NAME]
    assert np.abs(got - GOLDEN["rmt-t/logits"]).max() <= ATOL


def test_backbone_matches_the_official_detection_backbone(tmp_path):
    model = randomize_(create_backbone("rmt-t", (0, 1, 2, 3), extra_norms=True),
                       seed=int(GOLDEN["backbone-rmt-t/seed"]))
    assert WEIGHTS_DIGEST(model.state_dict()) == str(GOLDEN["backbone-rmt-t/weights_sha256"])
    x = _input()[:1]
    wants = [GOLDEN[f"backbone-rmt-t/feat{i}"] for i in range(4)]
    deploy = to_deploy(model, SIZE)
    path = onnx_export.export(deploy, tmp_path / "b.onnx", SIZE, dynamic_batch=False, metadata={})
    with torch.inference_mode():
        ours, deployed = model(x), deploy(x)
    with onnx_target.TARGET.load(path, threads=2) as runner:
        exported = runner.infer({onnx_export.INPUT_NAME: x.numpy()})
    for i, want in enumerate(wants):
        assert np.abs(ours[i].numpy() - want).max() <= ATOL
        assert np.abs(deployed[i].numpy() - want).max() <= ATOL
        assert np.abs(exported[f"feat{i}"] - want).max() <= ATOL


_DIGEST_UNDER_QEMU = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.seeded import seeded_values, values_digest
shapes = json.loads(open(sys.argv[2]).read())["rmt-t"]
print(values_digest({k: seeded_values(k, tuple(s), int(sys.argv[3])) for k, s in shapes.items()
                     if ".Relpos." not in k and not k.endswith("num_batches_tracked")}))
"""


@pytest.mark.skipif(qemu_missing() is not None, reason=str(qemu_missing()))
def test_seeded_weights_are_the_same_bits_on_another_cpu():
    """The goldens pin the seeded weights by digest; a CPU model other than the host's (qemu's
    AVX2-only Haswell) must recompute the same digest, so no CPU kind fails this suite."""
    seed = str(int(GOLDEN["rmt-t/seed"]))
    done = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", _DIGEST_UNDER_QEMU,
                           str(ROOT), str(REFERENCE_SHAPES), seed], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(GOLDEN["rmt-t/weights_sha256"])
    assert set(json.loads(REFERENCE_SHAPES.read_text())["rmt-t"]) == set(random_model("rmt-t").state_dict())
