"""Atomic output folders: a killed run's leftovers are removed by the next run, and only those."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rmt_deploy.outdir import _host, commit_out, prepare_out, remove_abandoned


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leftover(parent: Path, owner: str) -> Path:
    folder = parent / f".out.tmp-{owner}-x1y2"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"half written")
    return folder


def test_only_leftovers_of_exited_processes_on_this_host_are_removed(tmp_path):
    host = _host()
    dead = _leftover(tmp_path, f"{host}-{_exited_pid()}")
    alive = _leftover(tmp_path, f"{host}-{os.getpid()}")
    elsewhere = _leftover(tmp_path, f"{'0' * 8 if host != '0' * 8 else '1' * 8}-{_exited_pid()}")
    unowned = _leftover(tmp_path, "unowned")
    other_out = tmp_path / f".other.tmp-{host}-{_exited_pid()}-x"
    other_out.mkdir()
    assert remove_abandoned(tmp_path / "out") == [dead]
    assert not dead.exists() and alive.exists() and elsewhere.exists() and unowned.exists() and other_out.exists()


def test_prepare_names_its_owner_and_commit_swaps_the_old_folder_out(tmp_path):
    tmp = prepare_out(tmp_path / "out")
    assert tmp.name.startswith(f".out.tmp-{_host()}-{os.getpid()}-") and not any(tmp.iterdir())
    (tmp / "report.json").write_text("{}")
    commit_out(tmp, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json"]
    again = prepare_out(tmp_path / "out")
    (again / "report.json").write_text('{"new": 1}')
    commit_out(again, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "report.json").read_text() == '{"new": 1}'


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_export_killed_mid_run_is_cleaned_up_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "rmt_deploy.cli", "export", "--target", "onnx", "--out", str(out), "--bench-iters", "0"]
    victim = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*")) and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "the export ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert list(tmp_path.glob(".out.tmp-*")) and not out.exists()
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "model.onnx").exists()


def test_artifact_parts_cover_companion_files(tmp_path):
    from rmt_deploy.artifacts import artifact_bytes, artifact_parts, remove_artifact

    engine, sidecar = tmp_path / "model_int8.engine", tmp_path / "model_int8.json"
    engine.write_bytes(b"12345")
    sidecar.write_text("{}")
    assert artifact_parts(engine) == [engine, sidecar] and artifact_bytes(engine) == 7
    remove_artifact(engine)
    assert not engine.exists() and not sidecar.exists()


def test_an_old_folder_moved_aside_by_a_dead_run_comes_back(tmp_path):
    """Where no atomic exchange exists, the old --out is moved aside before the new one goes in; a run
    killed between the two renames leaves no --out, and the next run restores the old one."""
    aside = tmp_path / f".out.old-{_host()}-{_exited_pid()}-x"
    aside.mkdir()
    (aside / "report.json").write_text("{}")
    tmp = prepare_out(tmp_path / "out")
    assert (tmp_path / "out" / "report.json").read_text() == "{}" and not aside.exists()
    tmp.rmdir()
