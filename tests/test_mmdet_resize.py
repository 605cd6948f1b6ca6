"""--resize mmdet: mmdet's own test resize (keep-ratio fit into 1333x800, pad to 32), without mmdet."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rmt_deploy.data import mmdet
from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import run_export
from rmt_deploy.jobs.plan import ExportOptions, plan

from .conftest import run

# (image H, W) → (resized H, W), (padded H, W), from mmcv's rescale_size (scale factor
# min(1333 / long, 800 / short), each side int(x * factor + 0.5)) and Pad(size_divisor=32).
MMDET_SIZES = [
    ((480, 640), (800, 1067), (800, 1088)),
    ((640, 480), (1067, 800), (1088, 800)),
    ((427, 640), (800, 1199), (800, 1216)),
    ((375, 500), (800, 1067), (800, 1088)),
    ((1080, 1920), (750, 1333), (768, 1344)),  # 749.81 rounds up: half-up per side, not floor
    ((800, 1333), (800, 1333), (800, 1344)),
    ((333, 500), (800, 1201), (800, 1216)),
    ((100, 1000), (133, 1333), (160, 1344)),
    ((2000, 300), (1333, 200), (1344, 224)),  # 199.95 → 200
    ((612, 612), (800, 800), (800, 800)),
]


@pytest.mark.parametrize("image, resized, padded", MMDET_SIZES)
def test_sizes_are_mmdets(image, resized, padded):
    assert mmdet.resized_size(*image) == resized
    assert mmdet.input_size(*image) == padded


def test_resized_sides_never_pass_the_edge_limits():
    for h in range(1, 2500, 37):
        for w in range(1, 2500, 41):
            rh, rw = mmdet.resized_size(h, w)
            assert max(rh, rw) <= 1333 and min(rh, rw) <= 800 and (max(rh, rw) == 1333 or min(rh, rw) == 800)


def test_pixels_are_resized_bilinearly_and_padded_with_zeros_after_normalising():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    flat = np.full((30, 40, 3), 191, np.uint8)  # 191/255 → normalised (0.749 - 0.5) / 0.25
    out = mmdet.resize_and_pad(flat, mean, std, scale=(100, 60))  # factor min(100/40, 60/30) = 2
    assert out.shape == (3, 64, 96) and out.dtype == np.float32
    assert np.allclose(out[:, :60, :80], (191 / 255 - 0.5) / 0.25, atol=1e-6)
    assert not out[:, 60:, :].any() and not out[:, :, 80:].any()
    # A horizontal ramp stays a ramp inside (half-pixel centres), its values rounded to 8 bits like OpenCV's.
    ramp = np.repeat(np.repeat((np.arange(40) * 6).astype(np.uint8)[None, :, None], 30, 0), 3, 2)
    row = mmdet.resize_and_pad(ramp, (0, 0, 0), (1 / 255,) * 3, scale=(100, 60))[0, 10, :80]
    source = np.clip((np.arange(80) + 0.5) / 2 - 0.5, 0, 39)  # where each output pixel samples the input
    assert np.allclose(row, np.round(source * 6), atol=1e-3)


@pytest.mark.parametrize("flags, message", [
    (dict(task="backbone", resize="mmdet"), "--resize mmdet gives each image its own padded size; add --dynamic"),
    (dict(resize="mmdet", dynamic=True), "--resize is how a backbone's images are sized"),
    (dict(task="backbone", resize="mmdet:1333"), "--resize 'mmdet:1333' is unknown"),
    (dict(task="backbone", resize_scale=(1333, 800)), "--resize-scale sets mmdet's edge limits; add --resize mmdet"),
    (dict(task="backbone", dynamic=True, resize="mmdet", targets=("onnx", "coreml")),
     "a Core ML package takes only its enumerated sizes"),
])
def test_bad_resize_stops_before_any_work(flags, message, tmp_path):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(")):
        plan(ExportOptions(out=tmp_path / "out", **flags))
    assert not (tmp_path / "out").exists()


def test_resize_scale_flag_and_a_range_too_small_for_it(tmp_path):
    done = run("export", "--task", "backbone", "--dynamic", "--resize", "mmdet", "--resize-scale", "800x1333x2",
               "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "--resize-scale '800x1333x2' is not LONGxSHORT" in done.stderr
    with pytest.raises(UserInputError, match="--max-size 1024 is below 1344, the long side mmdet's resize"):
        run_export(ExportOptions(task="backbone", dynamic=True, resize="mmdet", img_size=(64, 64), max_size=1024,
                                 out=tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _photos(folder, shapes):
    """Bundled digits resized to (H, W) shapes: photos of several aspect ratios."""
    from PIL import Image

    from rmt_deploy.bundled import bundled_images

    folder.mkdir()
    sources = sorted(p for p in bundled_images("val").rglob("*.png"))
    for i, (h, w) in enumerate(shapes):
        with Image.open(sources[i]) as im:
            im.convert("RGB").resize((w, h), Image.BILINEAR).save(folder / f"photo_{i}_{h}x{w}.png")
    return folder


@pytest.mark.slow
def test_backbone_artifact_takes_each_image_at_mmdets_size(tmp_path):
    """Verification and rd.load use the recorded resize; each image keeps its own padded size."""
    import rmt_deploy as rd
    from rmt_deploy.bundled import bundled_weights
    from rmt_deploy.model.dense import load_backbone

    photos = _photos(tmp_path / "photos", [(48, 64), (64, 48), (40, 100), (64, 64), (48, 64), (20, 200)])
    out = tmp_path / "out"
    report = run_export(ExportOptions(task="backbone", targets=("onnx",), dynamic=True, resize="mmdet",
                                      resize_scale=(128, 96), img_size=(64, 96), min_size=64, max_size=128,
                                      eval_dir=photos, parity_samples=6, bench_iters=0, out=out))
    (artifact,) = report["artifacts"]
    assert artifact["status"] == "ok", artifact
    # 48x64 → 96x128, 64x48 → 128x96, 40x100 → 51x128 → 64x128, 64x64 → 96x96; 20x200 → 32x128 is outside.
    verified = report["model"]["dynamic_size"]["verified_sizes"]
    assert [96, 128] in verified and [128, 96] in verified and [96, 96] in verified
    assert {tuple(p["size"]) for p in artifact["parity_at_sizes"]} >= {(96, 128), (128, 96), (96, 96), (64, 128)}
    assert all(p["max_abs"] <= 1e-4 for p in artifact["parity_at_sizes"])
    assert report["model"]["preprocess"]["resize"] == "mmdet"

    model = load_backbone(bundled_weights(), None, (0, 1, 2, 3)).model.eval()
    with rd.load(out / "model.onnx") as loaded:
        assert loaded.metadata["resize"] == "mmdet" and loaded.metadata["resize_scale"] == "128x96"
        path = photos / "photo_2_40x100.png"
        maps = loaded.features(path)
        x = loaded.tensor(path)
        assert x.shape == (3, 64, 128) and not x[:, 51:, :].any()  # resized to 51x128, padded to 64x128
        with torch.no_grad():
            expected = model(torch.from_numpy(x[None]))
        assert maps["feat0"].shape == (1, 32, 16, 32)
        for name, ref in zip(json.loads(loaded.metadata["outputs"]), expected):
            assert np.abs(maps[name["name"]] - ref.numpy()).max() <= 1e-4
        with pytest.raises(UserInputError, match=r"32x128 is outside the sizes this artifact takes \(each side "
                                                 r"64–128"):
            loaded.features(photos / "photo_5_20x200.png")
