"""The installed `rmt-deploy` command, end to end, including every bad input of issue #2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import random_model, run

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "out"
    result = run("export", "--target", "onnx", "--out", str(out), "--bench-iters", "5")
    return result, out


def test_default_export_on_demo(demo_run):
    result, out = demo_run
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "plot.png", "report.json", "report.md"]
    assert "![" in (out / "report.md").read_text() and (out / "plot.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["variant"] == "rmt-demo" and report["model"]["input_size"] == [64, 64]
    (art,) = report["artifacts"]
    assert art["status"] == "ok" and art["target"] == "onnx" and art["precision"] == "fp32"
    assert art["size_bytes"] == (out / "model.onnx").stat().st_size
    assert art["parity"]["max_abs"] <= 1e-4 and art["parity"]["cosine"] > 0.99999
    acc = art["accuracy"]
    assert acc["samples"] == 360 and acc["top1"] >= 95.0 and acc["drop"] == 0.0 and acc["agreement"] == 1.0
    assert set(art["latency_ms"]) >= {"p50", "p90", "p99", "mean", "threads", "device", "batch", "warmup", "iterations"}
    assert {"torch", "onnxruntime", "onnx"} <= set(report["environment"]["packages"])
    assert "| onnx | fp32 | ok |" in (out / "report.md").read_text()
    assert "report:" in result.stdout


def test_onnx_metadata_from_demo(demo_run):
    import onnx

    _, out = demo_run
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert props["arch"] == "rmt-demo" and props["input_size"] == "64x64" and props["num_classes"] == "10"
    assert props["precision"] == "fp32"
    assert json.loads(props["class_names"]) == [str(i) for i in range(10)]
    assert json.loads(props["mean"]) == [0.485, 0.456, 0.406] and len(props["source_sha256"]) == 64
    assert props["rmt_deploy.version"]


def test_rerun_replaces_previous_output(demo_run):
    _, out = demo_run
    result = run("export", "--out", str(out), "--bench-iters", "0", "--parity-samples", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["parity_samples"] == 2 and report["artifacts"][0]["latency_ms"] is None
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_user_checkpoint_with_arch_size_dynamic_batch(tmp_path):
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": random_model("rmt-demo", seed=9).state_dict(), "epoch": 1}, ckpt)
    out = tmp_path / "o"
    result = run("export", "-w", str(ckpt), "--arch", "rmt-demo", "--img-size", "64x96", "--dynamic-batch",
                 "--target", "onnx", "--out", str(out), "--bench-iters", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"]["input_size"] == [64, 96] and report["model"]["dynamic_batch"] is True
    assert report["model"]["checkpoint_entry"] == "model"


def test_inspect_and_doctor(demo_run):
    result = run("inspect", str(Path(__file__).resolve().parents[1] / "rmt_deploy" / "assets" / "rmt_demo.safetensors"), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["arch"] == "rmt-demo" and info["num_classes"] == 10 and info["resolution_hint"] == "64x64"
    result = run("doctor", "--json")
    assert result.returncode == 0, result.stderr
    doctor = json.loads(result.stdout)
    assert {"target": "onnx", "status": "ok"}.items() <= doctor["targets"][0].items()
    assert run("doctor").returncode == 0


# ------------------------------------------------------------------ bad input: exit 2, one line, nothing written


def _bad_checkpoints(tmp: Path) -> dict[str, Path]:
    state = random_model("rmt-demo").state_dict()
    torch.save(state, tmp / "good.pth")
    data = (tmp / "good.pth").read_bytes()
    (tmp / "truncated.pth").write_bytes(data[: len(data) // 3])
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "unreadable.pth").write_bytes(data)
    (tmp / "unreadable.pth").chmod(0)
    torch.save({"model": state, "hook": _Payload(tmp / "code_ran")}, tmp / "pickle_code.pth")
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "classifier.weight": torch.zeros(10, 8)}, tmp / "resnet.pth")
    return {name: tmp / f"{name}.pth" for name in ("truncated", "empty", "unreadable", "pickle_code", "resnet")}


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


BAD_ARGS = {
    "missing checkpoint": (["-w", "{tmp}/nope.pth"], "not found"),
    "truncated checkpoint": (["-w", "{tmp}/truncated.pth"], "truncated or corrupt"),
    "empty checkpoint": (["-w", "{tmp}/empty.pth"], "empty"),
    "pickle with code": (["-w", "{tmp}/pickle_code.pth"], "refusing to load"),
    "other architecture": (["-w", "{tmp}/resnet.pth"], "not an RMT classifier"),
    "size not multiple of 32": (["--img-size", "100"], "not a multiple of 32"),
    "size zero": (["--img-size", "0"], "between 32 and"),
    "size negative": (["--img-size", "-64"], "between 32 and"),
    "size absurd": (["--img-size", "100000"], "between 32 and"),
    "size not a number": (["--img-size", "big"], "not a size"),
    "atol zero": (["--atol", "0"], "--atol must be a positive number"),
    "negative threads": (["--threads", "0"], "--threads must be at least 1"),
    "unknown target": (["--target", "onnxx"], "unknown target 'onnxx'; did you mean 'onnx'"),
    "unknown arch": (["--arch", "rmt-x"], "unknown architecture 'rmt-x'"),
    "wrong arch": (["--arch", "rmt-t"], "does not fit rmt-t"),
    "eval with mismatched classes": (["--eval", "{tmp}/evalset"], "has 3 class folders but the model has 10"),
    "empty eval folder": (["--eval", "{tmp}/emptydir"], "no images"),
}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    _bad_checkpoints(tmp)
    from PIL import Image
    for cls in ("a", "b", "c"):
        (tmp / "evalset" / cls).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp / "evalset" / cls / "x.png")
    (tmp / "emptydir").mkdir()
    return tmp


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_input(case, bad_inputs):
    args, expected = BAD_ARGS[case]
    out = bad_inputs / f"out_{case.replace(' ', '_')}"
    result = run("export", *[a.format(tmp=bad_inputs) for a in args], "--out", str(out), "--bench-iters", "0")
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip() and not ln.startswith("✓")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p for p in bad_inputs.iterdir() if ".tmp-" in p.name]
    assert not (bad_inputs / "code_ran").exists()


def test_checkpoint_that_cannot_be_read_as_a_file(bad_inputs):
    # A named pipe in the checkpoint's place: unreadable for root too (CI runs as root), and opening it
    # would block for ever. It is refused before any read, in one line.
    fifo = bad_inputs / "pipe.pth"
    if not fifo.exists():
        os.mkfifo(fifo)
    result = run("export", "-w", str(fifo), "--out", str(bad_inputs / "o"))
    assert result.returncode == 2 and "is not a regular file" in result.stderr and "Traceback" not in result.stderr
    assert not (bad_inputs / "o").exists()


def test_unreadable_checkpoint(bad_inputs):
    if os.geteuid() == 0:
        pytest.skip("running as root: a mode-000 file is still readable (test_checkpoint_that_cannot_be_read_as_a_file "
                    "covers root)")
    result = run("export", "-w", str(bad_inputs / "unreadable.pth"), "--out", str(bad_inputs / "o"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_unwritable_out(bad_inputs):
    blocker = bad_inputs / "a_file"
    blocker.write_text("x")
    result = run("export", "--out", str(blocker / "sub" / "out"), "--bench-iters", "0")
    assert result.returncode == 2 and "cannot write to --out" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_out_is_foreign_folder(bad_inputs):
    foreign = bad_inputs / "my_documents"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    result = run("export", "--out", str(foreign), "--bench-iters", "0")
    assert result.returncode == 2 and "did not write" in result.stderr
    assert (foreign / "thesis.txt").read_text() == "precious"


def test_parity_failure_fails_export_but_keeps_report(tmp_path):
    out = tmp_path / "strict"
    result = run("export", "--out", str(out), "--atol", "1e-12", "--bench-iters", "0", "--parity-samples", "4")
    assert result.returncode == 1, result.stderr
    assert "exceeds atol 1e-12" in result.stderr and "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    (art,) = report["artifacts"]
    assert art["status"] == "failed" and "max abs diff" in art["reason"] and art["path"] is None
    assert not (out / "model.onnx").exists()
    assert "| onnx | fp32 | failed" in (out / "report.md").read_text()


def test_unknown_option_is_usage_error():
    result = run("export", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


# Every artifact suffix a loader takes; .mlpackage is a folder, tried both as a file and as a folder.
SUFFIXES = [".onnx", ".ort.onnx", ".xml", ".engine", ".pte", ".tflite", ".mnn", ".mlpackage", ".mlpackage/"]


def _noise(folder: Path, suffix: str) -> Path:
    """4 KB of seeded random bytes under an artifact's name (a folder with a random manifest for .mlpackage/)."""
    import numpy as np

    noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = folder / f"noise{suffix.rstrip('/')}"
    if suffix.endswith("/"):
        path.mkdir()
        (path / "Manifest.json").write_bytes(noise)
    else:
        path.write_bytes(noise)
    return path


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_random_bytes_under_every_artifact_suffix_are_refused_in_one_line(tmp_path, suffix):
    """Before a native runtime reads a file, its format is checked: no abort, no traceback, exit 2."""
    import rmt_deploy as rd
    from rmt_deploy.errors import UserInputError

    path = _noise(tmp_path, suffix)
    done = run("predict", str(path))
    assert done.returncode == 2, (done.returncode, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "noise" in line and "Traceback" not in done.stderr
    with pytest.raises(UserInputError):  # in-process too: a native abort would take pytest down with it
        rd.load(path)


def test_threads_below_one_are_refused(demo_run):
    _, out = demo_run
    for command in (["predict", str(out / "model.onnx")], ["bench", str(out / "model.onnx")],
                    ["export", "--out", str(out.parent / "never")]):
        done = run(*command, "--threads", "0")
        assert done.returncode == 2 and "--threads" in done.stderr and not (out.parent / "never").exists()


def test_summary_fits_80_columns_with_every_value_whole(demo_run):
    """CI logs are 80 columns wide: no value cut to '…'; why an artifact failed or was skipped on its own line."""
    import json

    from rich.console import Console

    from rmt_deploy.cli.export import _summary

    _, out = demo_run
    report = json.loads((out / "report.json").read_text())
    ok = report["artifacts"][0]
    report["artifacts"] = [
        {**ok, "target": "onnxruntime", "size_bytes": 381_234_567},
        {**ok, "target": "executorch", "precision": "int8", "status": "skipped", "parity": None, "accuracy": None,
         "latency_ms": None, "reason": "the executorch extra is not installed: pip install -c constraints.txt -e "
                                       "'.[executorch]' from a checkout, or the wheel with [executorch]"},
        {**ok, "target": "tensorrt", "precision": "fp16", "status": "failed", "reason": "worst cosine 0.98 < 0.999"},
    ]
    console = Console(width=80, record=True, color_system=None)
    _summary(console, report)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in text
    for value in ("onnxruntime", "381.2", "executorch", "skipped", "tensorrt", "failed", f"{ok['parity']['max_abs']:.1e}"):
        assert value in text, value
    assert any(line.startswith("executorch int8 skipped: the executorch extra") for line in lines)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or shutil.which("taskset") is None,
                    reason="CPU affinity (taskset) is Linux-only")
def test_default_threads_follow_the_cpus_this_process_may_use():
    """Under taskset (or a container's cpuset) runtimes get as many threads as usable cores, not the machine's count."""
    code = "from rmt_deploy.cpu import usable_cores, restricted_threads; print(usable_cores(), restricted_threads())"
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True)
    assert pinned.stdout.split() == ["1", "1" if os.cpu_count() > 1 else "None"], pinned.stderr
