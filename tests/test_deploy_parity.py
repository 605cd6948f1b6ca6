"""Deploy form == reference model (FP32, max abs logit difference ≤ 1e-4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rmt_deploy.model.checkpoint import load_model
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.rewrite.deploy import DeployMaSA

from .conftest import random_model, real_images
from .seeded import normal

ATOL = 1e-4


def _check(model, size, x: torch.Tensor) -> float:
    deploy = to_deploy(model, size)
    with torch.inference_mode():
        ref, got = model(x), deploy(x)
    assert ref.abs().max() > 0.5, "logits too small for the tolerance to mean anything"
    diff = (ref - got).abs().max().item()
    assert diff <= ATOL, f"max abs diff {diff:.3g}"
    return diff


def _inputs(size, n_random=2, n_real=3) -> torch.Tensor:
    torch.manual_seed(1)
    real = torch.from_numpy(real_images(size, n_real))
    return torch.cat([normal((n_random, 3, *size)), real])


@pytest.mark.parametrize("variant", ["rmt-t", "rmt-s", "rmt-b", "rmt-l"])
def test_official_variants_low_resolution(variant):
    _check(random_model(variant), (64, 64), _inputs((64, 64)))


def test_token_label_variant():
    _check(random_model("rmt-s-tl"), (64, 64), _inputs((64, 64)))


def test_layerscale_variant_non_square():
    # rmt-b has layer scale in stages 3-4 and decomposed attention in stage 3.
    _check(random_model("rmt-b"), (64, 96), _inputs((64, 96)))


def test_non_square_tall_and_batch_three():
    _check(random_model("rmt-t"), (96, 32), _inputs((96, 32), n_random=1, n_real=2))


@pytest.mark.slow
def test_rmt_t_full_resolution():
    _check(random_model("rmt-t"), (224, 224), _inputs((224, 224), n_random=1, n_real=1))


def test_demo_checkpoint_on_real_images(demo_weights):
    loaded = load_model(demo_weights)
    x = torch.from_numpy(real_images((64, 64), 16))
    _check(loaded.model, (64, 64), x)


def test_rewrite_copies_and_leaves_reference_untouched():
    model = random_model("rmt-demo")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deploy = to_deploy(model, (64, 64))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.data_ptr() == q.data_ptr() for p in deploy.parameters() for q in model.parameters())


def test_size_must_be_multiple_of_stride():
    with pytest.raises(ValueError, match="multiple of 32"):
        to_deploy(random_model("rmt-demo"), (64, 80))


def test_attention_rotation_matches_reference_block():
    """One MaSA block in isolation, both forms, so a failure points at the attention."""
    model = random_model("rmt-t")
    size = (64, 96)
    for deploy in (to_deploy(model, size), to_deploy(model, (32, 32), dynamic=True)):
        for stage_ref, stage_dep, stride in zip(model.layers, deploy.stages, (4, 8, 16, 32)):
            h, w = size[0] // stride, size[1] // stride
            x = normal((2, h, w, stage_ref.blocks[0].retention.q_proj.in_features))
            attn: DeployMaSA = stage_dep.blocks[0].attn
            with torch.inference_mode():
                ref = stage_ref.blocks[0].retention(x, stage_ref.Relpos)
                got = attn(x, *stage_dep.tables(h, w))
            np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)


def test_table_and_attention_budgets_grow_with_size():
    from rmt_deploy.model.variants import VARIANTS
    from rmt_deploy.rewrite import attention_bytes, runtime_table_bytes, table_bytes

    cfg = VARIANTS["rmt-t"]
    # Stage 3 of rmt-t is whole attention: 8 heads x (14*14)^2 floats at 224² once a runtime builds
    # it; the file holds per-axis tables (8 x (14² + 14²)) and one head's rotary tables instead.
    assert runtime_table_bytes(cfg, (224, 224)) == 4 * (8 * 196 ** 2 + 16 * 49 ** 2)
    assert table_bytes(cfg, (224, 224)) < 4 * 8 * 196 ** 2
    # Linear in the token count: twice the side, four times the bytes.
    assert table_bytes(cfg, (448, 448)) <= 4 * table_bytes(cfg, (224, 224))
    # 224²: stage 1's row pass (4 heads, 56 rows of 56x56) is the largest matrix;
    # 896²: stage 3's whole attention (8 heads, (56*56)^2) takes over.
    assert attention_bytes(cfg, (224, 224)) == 4 * 4 * 56 ** 3
    assert attention_bytes(cfg, (896, 896)) == 4 * 8 * (56 * 56) ** 2
    deploy = to_deploy(random_model("rmt-demo"), (64, 96))
    buffers = sum(b.numel() * 4 for b in deploy.buffers())
    assert buffers == table_bytes(deploy.cfg, (64, 96))
