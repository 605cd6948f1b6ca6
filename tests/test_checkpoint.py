"""Every checkpoint form loads strictly; every bad file fails with one clear message."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rmt_deploy.errors import UserInputError
from rmt_deploy.model.checkpoint import detect_variant, inspect_checkpoint, load_model, read_checkpoint
from rmt_deploy.model.rmt import create_model

from .conftest import random_model


@pytest.fixture(scope="module")
def demo_state() -> dict[str, torch.Tensor]:
    return random_model("rmt-demo", seed=3).state_dict()


def _same_weights(model, state) -> bool:
    got = model.state_dict()
    return set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".pth.tar", ".bin"])
@pytest.mark.parametrize("wrap", [None, "model", "state_dict", "model_ema"])
def test_torch_forms(tmp_path, demo_state, suffix, wrap):
    obj = demo_state if wrap is None else {wrap: demo_state}
    path = tmp_path / f"ckpt{suffix}"
    torch.save(obj, path)
    loaded = load_model(path)
    assert loaded.variant == "rmt-demo" and loaded.num_classes == 10
    assert loaded.checkpoint.source_key == wrap
    assert _same_weights(loaded.model, demo_state)


def test_ddp_prefix_and_training_entries(tmp_path, demo_state):
    path = tmp_path / "train_state.pth"
    torch.save({
        "model": {f"module.{k}": v for k, v in demo_state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        "lr_scheduler": {"last_epoch": 3},
        "epoch": 299,
        "max_accuracy": np.float64(82.4),
        "args": argparse.Namespace(input_size=256, model="RMT_T3"),
    }, path)
    loaded = load_model(path)
    assert _same_weights(loaded.model, demo_state)
    assert loaded.checkpoint.other_entries == ["args", "epoch", "lr_scheduler", "max_accuracy", "optimizer"]
    assert loaded.checkpoint.hints["input_size"] == 256


def test_model_preferred_over_ema_when_both_present(tmp_path, demo_state):
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in demo_state.items()}
    torch.save({"model": demo_state, "model_ema": ema}, tmp_path / "both.pth")
    loaded = load_model(tmp_path / "both.pth")
    assert loaded.checkpoint.source_key == "model" and _same_weights(loaded.model, demo_state)


def test_safetensors(tmp_path, demo_state):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in demo_state.items()}, str(path))
    loaded = load_model(path)
    assert loaded.variant == "rmt-demo" and _same_weights(loaded.model, demo_state)


def test_fp16_checkpoint_loads_as_fp32(tmp_path, demo_state):
    half = {k: v.half() if v.is_floating_point() else v for k, v in demo_state.items()}
    torch.save(half, tmp_path / "half.pth")
    loaded = load_model(tmp_path / "half.pth")
    assert loaded.model.head.weight.dtype == torch.float32


@pytest.mark.parametrize("variant", ["rmt-t", "rmt-s-tl"])
def test_official_variants_detected_with_class_count(variant):
    with torch.device("meta"):
        state = create_model(variant, num_classes=37).state_dict()
    assert detect_variant(state) == (variant, 37)


def test_arch_override_and_alias(tmp_path):
    state = create_model("rmt-t", num_classes=5).state_dict()
    torch.save(state, tmp_path / "t.pth")
    loaded = load_model(tmp_path / "t.pth", arch="RMT_T3")
    assert loaded.variant == "rmt-t" and loaded.num_classes == 5


# ------------------------------------------------------------------ bad input


def _message(path: Path, arch=None) -> str:
    with pytest.raises(UserInputError) as info:
        load_model(path, arch)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_missing_file(tmp_path):
    assert "not found" in _message(tmp_path / "nope.pth")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    assert "empty" in _message(tmp_path / "empty.pth")


def test_truncated_file(tmp_path, demo_state):
    torch.save(demo_state, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _message(tmp_path / "cut.pth")


def test_truncated_safetensors(tmp_path, demo_state):
    save_file({k: v.contiguous() for k, v in demo_state.items()}, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:1000])
    assert "truncated or corrupt" in _message(tmp_path / "cut.safetensors")


def test_garbage_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(os.urandom(4096))
    assert "corrupt" in _message(tmp_path / "junk.pth")


class _Payload:
    """Pickling this object records a call that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused(tmp_path, demo_state):
    marker = tmp_path / "code_ran"
    torch.save({"model": demo_state, "hook": _Payload(marker)}, tmp_path / "evil.pth")
    text = _message(tmp_path / "evil.pth")
    assert "refusing to load" in text and "run code" in text
    assert not marker.exists(), "the payload was executed"


def test_whole_model_pickle_is_refused(tmp_path):
    torch.save(create_model("rmt-demo"), tmp_path / "model.pth")
    assert "refusing to load" in _message(tmp_path / "model.pth")


def test_other_architecture_keys(tmp_path):
    torch.save({"conv.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, tmp_path / "cnn.pth")
    assert "not an RMT classifier" in _message(tmp_path / "cnn.pth")


def test_missing_key_is_named(tmp_path):
    state = create_model("rmt-t", num_classes=10).state_dict()
    state.pop("layers.2.blocks.3.ffn.fc2.bias")
    torch.save(state, tmp_path / "t.pth")
    text = _message(tmp_path / "t.pth")
    assert "closest is rmt-t" in text and "1 missing: layers.2.blocks.3.ffn.fc2.bias" in text


def test_wrong_forced_arch_lists_shape_mismatches(tmp_path, demo_state):
    torch.save(demo_state, tmp_path / "demo.pth")
    text = _message(tmp_path / "demo.pth", arch="rmt-t")
    assert "does not fit rmt-t" in text and "wrong shape" in text and "missing" in text


def test_unknown_arch(tmp_path, demo_state):
    torch.save(demo_state, tmp_path / "demo.pth")
    assert "unknown architecture 'rmt-q'" in _message(tmp_path / "demo.pth", arch="rmt-q")


def test_folder_instead_of_file(tmp_path):
    assert "is a folder" in _message(tmp_path)


def test_inspect_reports_entries(tmp_path, demo_state):
    torch.save({"model": demo_state, "epoch": 3, "args": argparse.Namespace(input_size=224)}, tmp_path / "c.pth")
    info = inspect_checkpoint(tmp_path / "c.pth")
    assert info["arch"] == "rmt-demo" and info["num_classes"] == 10
    assert info["weights_entry"] == "model" and info["other_entries"] == ["args", "epoch"]
    assert info["resolution_hint"] == "224" and info["params_m"] > 0.5


def test_read_checkpoint_keeps_safetensors_metadata(tmp_path, demo_state):
    save_file({k: v.contiguous() for k, v in demo_state.items()}, str(tmp_path / "m.safetensors"),
              metadata={"rmt_deploy.input_size": "96x64"})
    assert read_checkpoint(tmp_path / "m.safetensors").metadata["rmt_deploy.input_size"] == "96x64"
