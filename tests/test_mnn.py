"""MNN target: FP32, FP16 and INT8 .mnn files of the demo, verified by MNN's runtime, with no
network call and no pip run while exporting; metadata round trip; bad inputs in one line."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

import rmt_deploy as rd
from rmt_deploy.bundled import bundled_images
from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import ExportOptions, run_export

from .conftest import run

pytest.importorskip("MNN", reason='mnn not installed (pip install -c constraints.txt -e ".[mnn]")')

VAL = sorted(bundled_images("val").rglob("*.png"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of all three precisions, run with sockets refused and every subprocess recorded."""
    out = tmp_path_factory.mktemp("mnn") / "out"
    commands, connects = [], []
    real_popen_init = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        commands.append([str(a) for a in (args if isinstance(args, (list, tuple)) else [args])])
        return real_popen_init(self, args, *rest, **kwargs)

    def connect(self, address):
        connects.append(address)
        raise OSError("rmt-deploy's MNN export must make no network call")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", popen)
        patch.setattr(socket.socket, "connect", connect)
        report = run_export(ExportOptions(targets=("mnn",), fp32=True, fp16=True, int8=True, out=out, bench_iters=3,
                                          calib_size=32, parity_samples=8))
    return report, out, commands, connects


def test_every_precision_is_verified_by_mnn(exported):
    report, out, _, _ = exported
    entries = {a["precision"]: a for a in report["artifacts"]}
    assert set(entries) == {"fp32", "fp16", "int8"} and all(a["status"] == "ok" for a in entries.values()), entries
    assert entries["fp32"]["parity"]["max_abs"] <= 1e-4  # exact GELU: not the converter's tanh default
    assert entries["fp16"]["parity"]["cosine"] >= 0.999
    assert entries["int8"]["parity"]["cosine"] >= 0.95 and entries["int8"]["accuracy"]["agreement"] >= 0.95
    assert entries["int8"]["quantization"]["calib_images"] == 32
    assert entries["int8"]["size_bytes"] < entries["fp16"]["size_bytes"] < entries["fp32"]["size_bytes"]
    assert entries["fp32"]["latency_ms"]["runtime"] == "mnn cpu (precision high)"
    assert sorted(p.name for p in out.iterdir()) == ["model.mnn", "model_fp16.mnn", "model_int8.mnn", "plot.png",
                                                     "report.json", "report.md"]


def test_no_network_and_no_pip_while_exporting(exported):
    """MNN's own Python tools pip-install a logging SDK and upload conversion details: never used."""
    _, _, commands, connects = exported
    assert connects == []
    assert not [c for c in commands if any(part.rsplit("/", 1)[-1].startswith("pip") for part in c)], commands
    assert [c for c in commands if any("_tools.mnnquant" in part for part in c)], "INT8 runs MNN's quantizer apart"
    assert "MNN.tools" not in sys.modules


def test_metadata_travels_in_the_file_and_predict_uses_it(exported):
    _, out, _, _ = exported
    from rmt_deploy.targets.mnn import describe

    for name, precision in (("model.mnn", "fp32"), ("model_fp16.mnn", "fp16"), ("model_int8.mnn", "int8")):
        meta = describe(out / name)["metadata"]
        assert meta["precision"] == precision and meta["arch"] == "rmt-demo" and meta["input_size"] == "64x64"
        assert json.loads(meta["class_names"]) == [str(i) for i in range(10)] and meta["exif"] == "orientation applied"
    with rd.load(out / "model_int8.mnn") as model:
        predictions = model.predict(VAL[::36], topk=1)
    assert sum(p.names[0] == p.source.split("/")[-2] for p in predictions) >= len(predictions) - 1


def test_bench_and_compare(exported, tmp_path):
    _, out, _, _ = exported
    done = run("bench", str(out / "model_int8.mnn"), "--iters", "5", "--no-reference", "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    cell = json.loads((tmp_path / "b" / "report.json").read_text())["artifacts"][0]
    assert cell["status"] == "ok" and cell["latency_ms"]["p50"] > 0
    refused = run("compare", str(out / "model.mnn"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len([ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_a_file_without_our_metadata_needs_preprocess(exported, tmp_path):
    from rmt_deploy.data.images import Preprocess
    from rmt_deploy.targets import mnn

    _, out, _, _ = exported
    foreign = tmp_path / "foreign.mnn"
    mnn._mnnconvert(["-f", "MNN", "--modelFile", str(out / "model.mnn"), "--bizCode", "someone else's"], foreign)
    with pytest.raises(UserInputError, match="no rmt-deploy metadata"):
        rd.load(foreign)
    with rd.load(foreign, preprocess=Preprocess((64, 64), crop_pct=1.0)) as model:
        assert model.predict(VAL[0], topk=1)[0].ok


def test_a_truncated_file_is_one_line(exported, tmp_path):
    _, out, _, _ = exported
    cut = tmp_path / "cut.mnn"
    cut.write_bytes((out / "model.mnn").read_bytes()[:100_000])
    done = run("predict", str(cut))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")][0].startswith("error: cut.mnn")


@pytest.mark.parametrize("flags, message", [
    (["--dynamic"], "mnn"),
    (["--delegate", "vulkan"], "--delegate"),
])
def test_unsupported_flags_fail_before_any_work(flags, message, tmp_path):
    done = run("export", "--target", "mnn", "--out", str(tmp_path / "o"), *flags)
    assert done.returncode == 2 and message in done.stderr and not (tmp_path / "o").exists(), done.stderr
    assert "Traceback" not in done.stderr


def test_a_fixed_batch_file_runs_one_image_per_call(exported):
    _, out, _, _ = exported
    with rd.load(out / "model.mnn") as model:
        x = np.stack([model.tensor(p) for p in VAL[:3]])
        assert model.logits(x).shape == (3, 10)  # a fixed-batch file runs one image per call


def test_backbone_file_matches_pytorch_per_map(tmp_path):
    report = run_export(ExportOptions(targets=("mnn",), task="backbone", img_size=(64, 96), out_indices=(1, 2, 3),
                                      out=tmp_path / "out", bench_iters=0, parity_samples=4))
    (entry,) = report["artifacts"]
    assert entry["status"] == "ok" and entry["parity"]["max_abs"] <= 1e-4, entry
    assert set(entry["parity"]["outputs"]) == {"feat1", "feat2", "feat3"}
    from rmt_deploy.targets.mnn import describe

    assert describe(tmp_path / "out" / "model.mnn")["output_names"] == ["feat1", "feat2", "feat3"]
