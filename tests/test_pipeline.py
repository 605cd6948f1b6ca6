"""run_export through the library API: evaluation sets, skipped images, atomic output."""
from __future__ import annotations

import json
import shutil

import pytest

from rmt_deploy.bundled import bundled_images
from rmt_deploy.errors import UserInputError, VerificationError
from rmt_deploy.jobs.export import ExportOptions, run_export
from rmt_deploy.sizes import parse_img_size


def _small_eval_set(root, per_class=2, corrupt=True):
    for cls_dir in sorted(bundled_images("val").iterdir()):
        dest = root / cls_dir.name
        dest.mkdir(parents=True)
        for f in sorted(cls_dir.iterdir())[:per_class]:
            shutil.copy(f, dest / f.name)
    if corrupt:
        (root / "3" / "broken.png").write_bytes(b"\x89PNG but not really")
    return root


def test_eval_set_with_corrupt_image(tmp_path):
    eval_dir = _small_eval_set(tmp_path / "eval")
    report = run_export(ExportOptions(eval_dir=eval_dir, out=tmp_path / "out", bench_iters=0, parity_samples=4))
    ver = report["verification"]
    assert ver["eval_samples"] == 20 and ver["skipped_images"] == [str(eval_dir / "3" / "broken.png")]
    acc = report["artifacts"][0]["accuracy"]
    assert acc["samples"] == 20 and acc["agreement"] == 1.0 and acc["top1"] == acc["top1_fp32"]


def test_flat_eval_folder_gives_parity_only(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((bundled_images("val") / "7").iterdir())[:3]:
        shutil.copy(f, flat / f.name)
    report = run_export(ExportOptions(eval_dir=flat, out=tmp_path / "out", bench_iters=0))
    art = report["artifacts"][0]
    assert art["accuracy"] is None and art["parity"]["samples"] == 3
    assert report["verification"]["eval_samples"] is None


def test_label_count_mismatch_is_rejected_before_writing(tmp_path):
    eval_dir = tmp_path / "eval"
    for cls in ("cat", "dog"):
        (eval_dir / cls).mkdir(parents=True)
        shutil.copy(next((bundled_images("val") / "1").iterdir()), eval_dir / cls / "x.png")
    with pytest.raises(UserInputError, match="2 class folders but the model has 10"):
        run_export(ExportOptions(eval_dir=eval_dir, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [eval_dir]


@pytest.mark.parametrize("text,size", [("224", (224, 224)), ("256x320", (256, 320)), (" 64X96 ", (64, 96)), ("64×64", (64, 64))])
def test_parse_img_size(text, size):
    assert parse_img_size(text) == size


def test_no_target(tmp_path):
    with pytest.raises(UserInputError, match="no --target"):
        run_export(ExportOptions(targets=(), out=tmp_path / "o"))


def _with_crashing_target(monkeypatch):
    """Register a target whose converter crashes; everything else is the real export job."""
    from rmt_deploy import targets

    class Crashy(targets.Target):
        name, suffix = "crashy", ".bin"

        def export(self, sources, request):
            request.path.write_bytes(b"partial")
            raise RuntimeError("converter crashed\nsecond line")

    monkeypatch.setitem(targets.TARGETS, "crashy", Crashy())


def test_failing_target_does_not_stop_the_rest(tmp_path, monkeypatch):
    _with_crashing_target(monkeypatch)
    with pytest.raises(VerificationError, match="crashy/fp32: RuntimeError: converter crashed"):
        run_export(ExportOptions(targets=("crashy", "onnx"), out=tmp_path / "out", bench_iters=0,
                                 parity_samples=2))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    crashy, onnx = report["artifacts"]
    assert crashy["status"] == "failed" and crashy["stage"] == "export"
    assert crashy["reason"] == "RuntimeError: converter crashed"
    assert onnx["status"] == "ok"
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["model.onnx", "plot.png", "report.json", "report.md"]  # no partial model.bin left behind


def test_strict_stops_at_the_failing_target(tmp_path, monkeypatch):
    _with_crashing_target(monkeypatch)
    with pytest.raises(RuntimeError, match="converter crashed"):
        run_export(ExportOptions(targets=("crashy", "onnx"), out=tmp_path / "out", strict=True))
    assert list(tmp_path.iterdir()) == []


def test_label_map_names_classes(tmp_path):
    eval_dir = _small_eval_set(tmp_path / "eval", per_class=1, corrupt=False)
    names = {str(i): f"digit-{i}" for i in range(10)}
    (tmp_path / "names.json").write_text(json.dumps(names))
    report = run_export(ExportOptions(eval_dir=eval_dir, label_map=tmp_path / "names.json",
                                      weights=None, out=tmp_path / "out", bench_iters=0, parity_samples=2))
    # An explicit map wins over the names stored in the demo checkpoint.
    assert report["model"]["class_names"] == [f"digit-{i}" for i in range(10)]
    assert report["artifacts"][0]["accuracy"]["samples"] == 10
