"""CoreML target: conversion of every variant, INT8 weights, preflight, the numpy numerical check.

Core ML's ``predict`` runs only on macOS; here each package is reloaded from disk and its
ops are evaluated with numpy (``coreml_mil``), and that is compared with PyTorch.
"""
from __future__ import annotations

import json
import platform

import numpy as np
import pytest
import torch

from rmt_deploy.bench.parity import compare_logits
from rmt_deploy.rewrite import to_deploy

from .conftest import random_model, real_images

coremltools = pytest.importorskip("coremltools", reason="coremltools not installed (pip install -e '.[coreml]')")

from rmt_deploy.targets import coreml  # noqa: E402 — after the skip
from rmt_deploy.targets.coreml_mil import evaluate, load_program  # noqa: E402
from rmt_deploy.targets.coreml_preflight import preflight  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
METADATA = {"arch": "rmt-t", "mean": json.dumps(MEAN), "std": json.dumps(STD), "num_classes": "1000",
            "rmt_deploy.version": "test"}
FP16_COSINE = 0.999


def _export(name: str, size, tmp_path, precision="fp16", **settings):
    deploy = to_deploy(random_model(name), size).eval()
    path = tmp_path / f"{name}_{precision}.mlpackage"
    coreml.export(deploy, path, size, precision=precision, metadata={**METADATA, "arch": name},
                  settings=coreml.CoreMLSettings(**settings))
    return deploy, path


def _numpy_vs_torch(deploy, path, x: np.ndarray) -> dict:
    with torch.no_grad():
        ref = deploy(torch.from_numpy(x)).numpy()
    with coreml.TARGET.load(path) as runner:
        out = runner.infer({"input": x})["logits"]
    return compare_logits(ref, out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rmt-t", "rmt-s", "rmt-b", "rmt-l"])
def test_every_variant_converts_at_a_non_square_size(name, tmp_path):
    size = (64, 96)
    deploy, path = _export(name, size, tmp_path)
    facts = coreml.inspect_graph(path)
    assert facts["status"] == "ok" and facts["max_rank"] <= 5
    assert facts["fp16_compute_fraction"] > 0.99 and set(facts["weight_dtypes"]) == {"fp16"}
    parity = _numpy_vs_torch(deploy, path, real_images(size, 2))
    assert parity["cosine"] >= FP16_COSINE and parity["top1_agreement"] == 1.0


@pytest.mark.slow
def test_rmt_t_224_fp16_and_int8_weights(tmp_path):
    size = (224, 224)
    x = real_images(size, 2)
    deploy, fp16 = _export("rmt-t", size, tmp_path)
    _, int8 = _export("rmt-t", size, tmp_path, precision="int8")
    f16, i8 = coreml.inspect_graph(fp16), coreml.inspect_graph(int8)
    assert f16["status"] == i8["status"] == "ok"
    assert "constexpr_affine_dequantize" in i8["ops"] and i8["weight_bytes"]["int8"] > 10e6
    ratio = f16["package_bytes"] / i8["package_bytes"]
    assert 1.8 < ratio < 2.2, f"INT8 weights should halve the package, got {ratio:.2f}x"
    assert _numpy_vs_torch(deploy, fp16, x)["cosine"] >= FP16_COSINE
    assert _numpy_vs_torch(deploy, int8, x)["cosine"] >= 0.995
    spec = coremltools.models.MLModel(str(int8), skip_model_load=True).get_spec()
    meta = dict(spec.description.metadata.userDefined)
    assert meta["precision"] == "int8" and meta["arch"] == "rmt-t" and meta["min_target"] == "iOS16"
    assert spec.description.metadata.author == "rmt-deploy"
    assert spec.description.input[0].type.multiArrayType.dataType == 65568  # FLOAT32: apps feed float32


def test_image_input_bakes_in_the_normalisation(tmp_path):
    size = (64, 64)
    deploy, path = _export("rmt-t", size, tmp_path, image_input=True)
    info = coreml.describe(path)
    assert info["image_input"] and info["input_name"] == coreml.IMAGE_INPUT
    parity = _numpy_vs_torch(deploy, path, real_images(size, 2))  # the runner feeds 0–255 pixels
    assert parity["cosine"] >= FP16_COSINE


def test_numerical_check_catches_a_wrong_input_scale(tmp_path):
    """The classic app bug: pixels not divided by 255. Planted in the program, the check fails."""
    size = (64, 64)
    deploy, path = _export("rmt-t", size, tmp_path, image_input=True)
    x = real_images(size, 2)
    with torch.no_grad():
        ref = deploy(torch.from_numpy(x)).numpy()
    pixels = np.clip((x * np.array(STD).reshape(1, 3, 1, 1) + np.array(MEAN).reshape(1, 3, 1, 1)) * 255, 0, 255)
    function = load_program(path).functions["main"]

    def logits() -> np.ndarray:
        return np.concatenate([evaluate(function, {"image": pixels[i:i + 1]})["logits"] for i in range(len(x))])

    assert compare_logits(ref, logits())["cosine"] >= FP16_COSINE
    scale = next(op for op in function.operations if op.op_type == "mul")  # ImageType's 1/255
    const = next(v for v in scale.inputs.values() if v.val is not None and np.isclose(v.val, 1 / 255).all())
    const.op.outputs[0]._sym_val.val = np.float32(1.0)
    assert compare_logits(ref, logits())["cosine"] < 0.99


def test_preflight_catches_a_rank_6_tensor():
    """The reference's window partition builds rank-6 tensors, over Core ML's limit of 5."""
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8))])
    def windows(x):
        y = mb.reshape(x=x, shape=[1, 3, 2, 4, 2, 4])
        y = mb.transpose(x=y, perm=[0, 1, 2, 4, 3, 5])
        return mb.reshape(x=y, shape=[1, 3, 8, 8])

    facts = preflight(windows)
    assert facts["status"] == "problems" and facts["max_rank"] == 6
    assert "rank limit of 5" in facts["problems"][0] and "transpose" in facts["problems"][0]
    x = np.arange(192, dtype=np.float32).reshape(1, 3, 8, 8)  # the evaluator runs it anyway
    expected = x.reshape(1, 3, 2, 4, 2, 4).transpose(0, 1, 2, 4, 3, 5).reshape(1, 3, 8, 8)
    np.testing.assert_array_equal(next(iter(evaluate(windows.functions["main"], {"x": x}).values())), expected)


def test_reference_model_does_not_convert_but_the_deploy_form_does(tmp_path):
    """Why the rewrite exists: the reference's rotary helper stacks into a rank-6 tensor."""
    reference = random_model("rmt-t")
    with torch.no_grad():
        traced = torch.jit.trace(reference, torch.zeros(1, 3, 64, 64), check_trace=False)
    with pytest.raises(ValueError, match="rank <= 5"), coreml._silenced():
        coremltools.convert(traced, inputs=[coremltools.TensorType(name="input", shape=(1, 3, 64, 64))],
                            convert_to="mlprogram")
    _, path = _export("rmt-t", (64, 64), tmp_path)
    assert coreml.inspect_graph(path)["status"] == "ok"


def test_settings_reject_impossible_combinations():
    from rmt_deploy.errors import UserInputError

    with pytest.raises(UserInputError, match="iOS16"):
        coreml.CoreMLSettings(min_target="iOS15").check(("int8",))
    with pytest.raises(UserInputError, match="unknown"):
        coreml.CoreMLSettings(min_target="iOS99").check(("fp16",))
    with pytest.raises(UserInputError, match="add --int8"):
        coreml.CoreMLSettings(w8a8=True, min_target="iOS17").check(("fp16",))
    with pytest.raises(UserInputError, match="iOS17"):
        coreml.CoreMLSettings(w8a8=True).check(("int8",))


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predict runs only on macOS")
def test_predict_matches_pytorch_on_every_compute_unit(tmp_path):
    size = (64, 64)
    deploy, path = _export("rmt-t", size, tmp_path)
    x = real_images(size, 4)
    with torch.no_grad():
        ref = deploy(torch.from_numpy(x)).numpy()
    for unit in coreml.COMPUTE_UNITS:
        with coreml.CoreMLRunner(path, unit) as runner:
            parity = compare_logits(ref, runner.infer({"input": x})["logits"])
        assert parity["cosine"] >= FP16_COSINE and parity["top1_agreement"] == 1.0, unit


@pytest.mark.slow
def test_dynamic_package_takes_its_enumerated_sizes(tmp_path):
    """export --dynamic: one package with enumerated shapes, its tables built in FP32 from the input's
    size (positions past 2048 have no exact FP16 value), checked by the numpy evaluator at two sizes."""
    ref = random_model("rmt-t")
    deploy = to_deploy(ref, (64, 64), dynamic=True).eval()
    path = tmp_path / "dynamic.mlpackage"
    sizes = [(32, 128), (64, 64), (128, 64)]
    coreml.export(deploy, path, (64, 64), precision="fp16", metadata=METADATA,
                  settings=coreml.CoreMLSettings(), sizes=sizes)
    info = coreml.describe(path)
    assert info["metadata"]["input_sizes"] == "32x128,64x64,128x64" and info["input_shape"] == [1, 3, 64, 64]
    facts = coreml.inspect_graph(path)
    assert facts["status"] == "ok" and facts["max_rank"] <= 5
    function = load_program(path).functions["main"]
    tables = [op for op in function.operations if op.op_type in ("sin", "cos", "range_1d")]
    assert tables and all(coremltools.converters.mil.mil.types.builtin_to_string(op.outputs[0].dtype)
                          in ("fp32", "int32") for op in tables)
    for size in [(32, 128), (128, 64)]:
        x = real_images(size, 1)
        with torch.no_grad():
            expected = ref(torch.from_numpy(x)).numpy()
        with coreml.TARGET.load(path) as runner:
            parity = compare_logits(expected, runner.infer({"input": x})["logits"])
        assert parity["cosine"] >= FP16_COSINE and parity["top1_agreement"] == 1.0, (size, parity)
