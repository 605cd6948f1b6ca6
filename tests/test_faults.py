"""Faults, made real: SIGKILL at each stage of an export and of `bench --from`, a full disk, a
read-only --out, two exports racing into one folder. Each leaves a folder that is the old one or
the new one, whole, and a rerun that succeeds.

A kill lands at an exact point through a small wrapper around the real CLI: it sends SIGKILL to its
own process when a named progress step starts, when a named file is about to be renamed into
place, or right after the output folder is swapped in. Nothing else is changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rmt_deploy.artifacts import artifact_bytes
from rmt_deploy.bench.report import render_markdown
from rmt_deploy.bundled import bundled_images

from .conftest import EXE, run

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL, tmpfs and namespaces: Linux")]

_KILLER = r"""
import os, signal, sys
kind, name = sys.argv[1], sys.argv[2]
del sys.argv[1:3]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":  # a progress step whose description starts with `name` begins
    from rmt_deploy import progress
    for cls in (progress.RichProgress, progress.NullProgress):
        def step(self, description, _original=cls.step):
            if description.startswith(name):
                die()
            return _original(self, description)
        cls.step = step
elif kind == "rename":  # a finished file named `name` is about to be renamed into place
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == name:
            die()
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
elif kind == "swapped":  # the output folder was just swapped in; the old one is not removed yet
    from rmt_deploy import outdir
    real_exchange = outdir._exchange
    def exchange(a, b):
        real_exchange(a, b)
        die()
    outdir._exchange = exchange

from rmt_deploy.cli import main
sys.argv[0] = "rmt-deploy"
main()
"""

# Small and quick, but every stage is there: calibration, verification on real images, a report.
EXPORT = ["export", "--target", "onnx", "--int8", "--bench-iters", "0", "--parity-samples", "4",
          "--calib-size", "16"]


def _env() -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "RMT_DEPLOY_DEBUG"}, "COLUMNS": "200"}


def _killed(tmp_path: Path, kind: str, name: str, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    return subprocess.run([sys.executable, str(script), kind, name, *args], capture_output=True, text=True,
                          env=_env(), timeout=600)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _whole(folder: Path) -> dict:
    """The folder is one run's complete output: every artifact the report lists at its recorded
    size, report.md rendered from this report.json, nothing half-written or left over."""
    report = json.loads((folder / "report.json").read_text())
    for entry in report["artifacts"]:
        if entry["status"] == "ok":
            assert artifact_bytes(folder / entry["path"]) == entry["size_bytes"], entry["path"]
    assert (folder / "report.md").read_text() == render_markdown(report, (folder / "plot.png").exists())
    assert not [p for p in folder.rglob("*") if p.name.startswith((".partial-", ".work"))]
    return report


def _leftovers(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.tmp-*"))


@pytest.fixture(scope="module")
def flat_eval(tmp_path_factory) -> Path:
    """Eight real images in a flat folder: parity only, no 360-image evaluation per run."""
    folder = tmp_path_factory.mktemp("eval")
    for path in sorted(bundled_images("val").rglob("*.png"))[::45]:
        shutil.copy(path, folder / f"{path.parent.name}-{path.name}")
    return folder


# (how, where): the stages of an export, in order
EXPORT_STAGES = [("step", "Loading"), ("rename", "model.onnx"), ("step", "Calibrating"),
                 ("step", "Verifying onnx/int8"), ("rename", "report.json"), ("swapped", "-")]


def test_export_killed_at_each_stage_leaves_the_old_folder_or_the_new_one(tmp_path, flat_eval):
    """Each kill is followed by a run that is killed later; the old output stays whole until a run
    swaps the new one in (after which it is the new one, whole), and the last rerun succeeds."""
    out = tmp_path / "out"
    args = [*EXPORT, "--eval", str(flat_eval), "--out", str(out)]
    first = run(*args)
    assert first.returncode == 0, first.stderr
    before = _snapshot(out)
    _whole(out)
    for kind, where in EXPORT_STAGES:
        done = _killed(tmp_path, kind, where, *args)
        assert done.returncode == -signal.SIGKILL, (kind, where, done.returncode, done.stderr[-2000:])
        if kind == "swapped":  # the new folder is in place; the old one is a leftover of a dead process
            assert _snapshot(out) != before
        else:
            assert _snapshot(out) == before, (kind, where)
        _whole(out)
    rerun = run(*args)
    assert rerun.returncode == 0, rerun.stderr
    _whole(out)
    assert _leftovers(tmp_path, "out") == [] and sorted(p.name for p in tmp_path.iterdir()) == ["killer.py", "out"]


def test_bench_from_killed_mid_run_leaves_the_old_report_or_the_new_one(tmp_path, flat_eval):
    out = tmp_path / "out"
    assert run("export", "--target", "onnx", "--bench-iters", "0", "--parity-samples", "4", "--eval",
                str(flat_eval), "--out", str(out)).returncode == 0
    before = _snapshot(out)
    bench = ["bench", "--from", str(out), "--iters", "3", "--batch", "1,2"]
    for kind, where in [("step", "Timing onnx/fp32"), ("rename", "report.md"), ("swapped", "-")]:
        done = _killed(tmp_path, kind, where, *bench)
        assert done.returncode == -signal.SIGKILL, (kind, where, done.stderr[-2000:])
        report = _whole(out)
        if kind == "swapped":
            assert report.get("bench") and _snapshot(out)["model.onnx"] == before["model.onnx"]
        else:
            assert _snapshot(out) == before, (kind, where)
    done = run(*bench)
    assert done.returncode == 0, done.stderr
    assert _whole(out).get("bench") and _leftovers(tmp_path, "out") == []


def _in_namespace(script: str) -> subprocess.CompletedProcess:
    """``script`` (sh) in new user and mount namespaces: it may mount a tmpfs without privileges,
    and the mount is gone when it ends."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=_env(),
                          timeout=600)


def test_a_full_disk_fails_in_one_line_with_no_half_written_file(tmp_path, flat_eval):
    """1 MiB holds the report but not the 2.8 MB model.onnx: each artifact fails with the reason,
    exit 1 in one line, and the folder holds a whole report of that, no partial model."""
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    done = _in_namespace(f"mount -t tmpfs -o size=1m tmpfs {disk} && {EXE} {' '.join(EXPORT)} --eval {flat_eval} "
                         f"--out {disk}/out; echo \"exit=$?\"; cp -a {disk}/. {kept}/")
    assert done.stdout.strip().splitlines()[-1] == "exit=1", (done.stdout, done.stderr)
    (error,) = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert "No space left on device" in error and "Traceback" not in done.stderr
    assert sorted(p.name for p in kept.iterdir()) == ["out"]  # no private folder left behind
    report = _whole(kept / "out")
    assert [a["status"] for a in report["artifacts"]] == ["failed", "failed"]
    assert all("No space left" in a["reason"] for a in report["artifacts"])
    assert not [p for p in (kept / "out").iterdir() if p.suffix == ".onnx"]


def test_a_read_only_out_is_refused_before_any_work(tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    done = _in_namespace(f"mount -t tmpfs -o size=1m,ro tmpfs {disk} && {EXE} {' '.join(EXPORT)} --out {disk}/out; "
                         "echo \"exit=$?\"")
    assert done.stdout.strip().splitlines()[-1] == "exit=2", (done.stdout, done.stderr)
    assert "cannot write to --out" in done.stderr and "Loading" not in done.stderr and "Traceback" not in done.stderr


def test_two_exports_into_one_folder_at_once_leave_a_consistent_folder(tmp_path, flat_eval):
    out = tmp_path / "out"
    common = ["--bench-iters", "0", "--parity-samples", "4", "--eval", str(flat_eval), "--out", str(out)]
    runs = [subprocess.Popen([EXE, "export", "--target", target, *common], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env()) for target in ("onnx", "onnxruntime")]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    assert [code for code, _ in results] == [0, 0], results
    report = _whole(out)
    files = {p.name for p in out.iterdir()}
    assert files == {"report.json", "report.md", "plot.png", *(a["path"] for a in report["artifacts"])}
    assert {a["target"] for a in report["artifacts"]} in ({"onnx"}, {"onnxruntime"})
    assert _leftovers(tmp_path, "out") == []
