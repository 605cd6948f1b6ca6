"""RMT as a detection / segmentation backbone: model, det/seg checkpoint intake, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rmt_deploy.errors import UserInputError
from rmt_deploy.model.backbone import EXTRA_NORM_EPS, RMTBackbone, create_backbone
from rmt_deploy.model.checkpoint import inspect_checkpoint, load_model
from rmt_deploy.model.dense import load_backbone, parse_out_indices
from rmt_deploy.model.variants import VARIANTS

from .conftest import mm_checkpoint, random_model, run
from .seeded import normal


def _stage_outputs(classifier, x: torch.Tensor) -> list[torch.Tensor]:
    """The classifier's stages, each output taken before its merge: the reference features."""
    outs, t = [], classifier.patch_embed(x)
    for stage in classifier.layers:
        for block in stage.blocks:
            t = block(t, stage.Relpos)
        outs.append(t.permute(0, 3, 1, 2))
        t = t if stage.downsample is None else stage.downsample(t)
    return outs


def _trunk(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(("proj.", "norm.", "head.", "aux_head."))}


@pytest.mark.parametrize("variant", ["rmt-t", "rmt-s", "rmt-b", "rmt-l"])
def test_backbone_equals_the_classifier_stages(variant):
    classifier = random_model(variant, seed=4).eval()
    backbone = RMTBackbone(VARIANTS[variant], extra_norms=False).eval()
    backbone.load_state_dict(_trunk(classifier.state_dict()), strict=True)
    x = normal((1, 3, 64, 96))  # non-square
    with torch.no_grad():
        ours, ref = backbone(x), _stage_outputs(classifier, x)
    assert [tuple(f.shape) for f in ours] == [(1, c, 64 // s, 96 // s) for c, s in
                                             zip(VARIANTS[variant].embed_dims, (4, 8, 16, 32))]
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_extra_norms_use_pytorch_default_eps_and_out_indices_pick_stages():
    classifier = random_model("rmt-demo", seed=5).eval()
    backbone = create_backbone("rmt-demo", out_indices=(1, 3)).eval()
    state = _trunk(classifier.state_dict())
    for i, d in enumerate(VARIANTS["rmt-demo"].embed_dims):
        state[f"extra_norms.{i}.weight"], state[f"extra_norms.{i}.bias"] = torch.from_numpy(np.random.default_rng(1).random(d, dtype=np.float32)) + 0.5, normal((d,))
    backbone.load_state_dict(state, strict=True)
    assert backbone.extra_norms[0].eps == EXTRA_NORM_EPS == 1e-5
    assert backbone.strides == (8, 32) and backbone.channels == (64, 128)
    x = normal((2, 3, 64, 64))
    with torch.no_grad():
        ref = _stage_outputs(classifier, x)
        f1, f3 = backbone(x)
    for got, i in ((f1, 1), (f3, 3)):
        want = torch.nn.functional.layer_norm(ref[i].permute(0, 2, 3, 1), (ref[i].shape[1],),
                                              state[f"extra_norms.{i}.weight"], state[f"extra_norms.{i}.bias"], 1e-5)
        assert torch.allclose(got, want.permute(0, 3, 1, 2), atol=1e-6)


@pytest.mark.parametrize("heads, task, wrapper", [
    (("rpn_head", "roi_head"), "detection", "state_dict"),
    (("bbox_head",), "detection", "model"),
    (("decode_head", "auxiliary_head"), "segmentation", "state_dict"),
    ((), "backbone", "state_dict"),
])
def test_detection_and_segmentation_checkpoints(tmp_path, heads, task, wrapper):
    path = tmp_path / "mm.pth"
    original = mm_checkpoint(path, heads, wrapper=wrapper).eval()
    loaded = load_backbone(path)
    assert loaded.variant == "rmt-t" and loaded.task == task and not loaded.features_only
    assert set(loaded.ignored) == {"neck", *heads}
    x = normal((1, 3, 64, 64))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded.model(x), original(x)))
    info = inspect_checkpoint(path)
    assert info["task"] == task and info["arch"] == "rmt-t" and set(info["other_parts"]) == {"neck", *heads}
    with pytest.raises(UserInputError, match=f"a {task} checkpoint.*no classification head.*--task backbone") as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_classification_checkpoint_as_backbone_has_raw_stage_outputs(tmp_path):
    path = tmp_path / "cls.pth"
    classifier = random_model("rmt-demo", seed=6).eval()
    torch.save({"model": classifier.state_dict()}, path)
    loaded = load_backbone(path, out_indices=(2, 3))
    assert loaded.task == "classification" and loaded.features_only and set(loaded.ignored) == {"head", "norm", "proj"}
    x = normal((1, 3, 64, 64))
    with torch.no_grad():
        ref = _stage_outputs(classifier, x)
        assert [torch.equal(a, b) for a, b in zip(loaded.model(x), ref[2:])] == [True, True]


def test_bad_backbone_input(tmp_path):
    for text in ("4", "0,0", "2,1", "a", ""):
        with pytest.raises(UserInputError, match="--out-indices"):
            parse_out_indices(text)
    path = tmp_path / "mm.pth"
    mm_checkpoint(path, ("rpn_head",))
    with pytest.raises(UserInputError, match="out_indices"):
        load_backbone(path, out_indices=(3, 1))
    resnet = tmp_path / "resnet_maskrcnn.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7), "backbone.bn1.weight": torch.ones(64),
                               "rpn_head.rpn_conv.weight": torch.zeros(8, 8, 3, 3)}}, resnet)
    with pytest.raises(UserInputError, match="not an RMT"):
        load_backbone(resnet)
    assert inspect_checkpoint(resnet)["arch"] is None
    with pytest.raises(UserInputError, match="does not fit rmt-s"):
        load_backbone(path, arch="rmt-s")


def test_cli_inspect_and_export_of_a_detection_checkpoint(tmp_path):
    path = tmp_path / "maskrcnn_rmt_t.pth"
    mm_checkpoint(path, ("rpn_head", "roi_head"))
    shown = run("inspect", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "detection checkpoint" in shown.stdout and "backbone rmt-t" in shown.stdout and "roi_head" in shown.stdout
    export = run("export", "-w", str(path), "--out", str(tmp_path / "out"))
    assert export.returncode == 2 and "a detection checkpoint" in export.stderr
    assert len(export.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
