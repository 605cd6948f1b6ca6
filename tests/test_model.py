"""The reference model reproduces the official state-dict layout and variant table."""
from __future__ import annotations

import pytest
import torch

from rmt_deploy.model.rmt import create_model
from rmt_deploy.model.variants import ALIASES, VARIANTS, UnknownVariantError, resolve_variant

from .seeded import normal

OFFICIAL = ["rmt-t", "rmt-t-tl", "rmt-s", "rmt-s-tl", "rmt-b", "rmt-b-tl", "rmt-l", "rmt-l-tl"]


@pytest.mark.parametrize("variant", OFFICIAL)
def test_state_dict_keys_and_shapes_equal_official(variant, reference_shapes):
    with torch.device("meta"):
        model = create_model(variant)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == reference_shapes[variant]


@pytest.mark.parametrize("variant,params_m", [("rmt-t", 14.3), ("rmt-s", 27.0), ("rmt-b", 54.2), ("rmt-l", 95.5)])
def test_parameter_counts_match_paper(variant, params_m):
    with torch.device("meta"):
        model = create_model(variant)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == params_m


def test_official_names_resolve():
    assert {resolve_variant(k.upper()) for k in ALIASES} == {"rmt-t", "rmt-s", "rmt-b", "rmt-l"}
    assert resolve_variant("RMT_S") == "rmt-s"
    assert resolve_variant(" rmt_b_tl ") == "rmt-b-tl"


def test_unknown_variant_suggests_close_name():
    with pytest.raises(UnknownVariantError, match="did you mean 'rmt-s'"):
        resolve_variant("rmt-ss")


def test_relpos_buffers_follow_formula():
    cfg = VARIANTS["rmt-t"]
    model = create_model("rmt-t")
    relpos = model.layers[2].Relpos
    heads, rng, init = cfg.num_heads[2], cfg.heads_ranges[2], cfg.init_values[2]
    h = torch.arange(heads, dtype=torch.float)
    assert torch.allclose(relpos.decay, torch.log(1 - 2 ** (-init - rng * h / heads)))
    assert (relpos.decay < 0).all()
    half = cfg.embed_dims[2] // heads // 2
    assert torch.allclose(relpos.angle[0::2], 1.0 / 10000 ** torch.linspace(0, 1, half))
    assert torch.equal(relpos.angle[0::2], relpos.angle[1::2])


def test_token_label_head_adds_half_max_of_aux():
    torch.manual_seed(0)
    model = create_model("rmt-demo", token_label=True).eval()
    x = normal((2, 3, 64, 64))
    with torch.no_grad():
        tokens = model.forward_features(x)
        base = model.head((lambda y: (y * torch.sigmoid(y)).mean(-1))(
            model.norm(model.proj(tokens).permute(0, 3, 1, 2)).flatten(2)))
        expected = base + 0.5 * model.aux_head(tokens.flatten(1, 2)).max(1).values
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="even size"):
        create_model("rmt-demo", num_heads=(3, 2, 4, 4))


def test_attention_in_chunks_computes_the_same_model():
    """Verification's low-memory reference: queries a few at a time (stage 3's whole attention 13 of its 60
    tokens, splitting grid rows; stage 1's row pass one grid row, its column pass two columns), the same
    outputs; outside the context, the official forward."""
    from rmt_deploy.model.backbone import create_backbone
    from rmt_deploy.model.rmt import attention_in_chunks

    from .conftest import randomize_

    model = randomize_(create_backbone("rmt-demo"), 0).eval()
    x = normal((2, 3, 96, 160))
    with torch.inference_mode():
        whole = model(x)
        with attention_in_chunks(model, elements=2 * 4 * 60 * 13):  # batch 2, 4 heads, 60 keys, 13 queries
            chunked = model(x)
        again = model(x)
    assert all(m.chunk_elements is None for m in model.modules() if hasattr(m, "chunk_elements"))
    for a, b, c in zip(whole, chunked, again):
        assert a.abs().max() > 0.1
        assert (a - b).abs().max() <= 1e-5
        assert torch.equal(a, c)
