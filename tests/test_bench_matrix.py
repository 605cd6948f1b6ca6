"""`bench` on real artifacts: batches, fixed-batch cells, failures that do not stop the matrix."""
from __future__ import annotations

import json
import shutil

import pytest

from rmt_deploy.bench.latency import measure, summarize
from rmt_deploy.jobs.bench import BenchOptions, parse_batches, run_bench
from rmt_deploy.bundled import bundled_images
from rmt_deploy.errors import UserInputError
from rmt_deploy.jobs.export import ExportOptions, run_export
from rmt_deploy.progress import NullProgress

from .conftest import run

FAST = dict(min_iters=3, min_seconds=0.0, warmup=1)


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "dyn"
    run_export(ExportOptions(out=out, dynamic_batch=True, bench_iters=0, parity_samples=2))
    return out


def test_statistics_flag_noise():
    quiet = summarize([0.010, 0.0101, 0.0099, 0.010])
    assert quiet["noisy"] is False and quiet["cv"] < 0.01
    noisy = summarize([0.010, 0.020, 0.010, 0.030])
    assert noisy["noisy"] is True and noisy["cv"] == pytest.approx(68.75 ** 0.5 / 17.5, abs=1e-4)


def test_measure_meets_both_count_and_time():
    import time

    calls = []
    # The count decides when the calls are slow enough: exactly min_iters timed runs after the warm-up.
    counted = measure(lambda: calls.append(time.sleep(0.002)), warmup=2, min_iters=7, min_seconds=0.0)
    assert counted["iterations"] == 7 and len(calls) == 9
    # The time decides when they are fast: timed runs go on until 0.05 s have passed, and stop then. A
    # sleep lasts at least 2 ms however busy the machine, which bounds the count from above only.
    calls.clear()
    start = time.perf_counter()
    timed = measure(lambda: calls.append(time.sleep(0.002)), warmup=2, min_iters=3, min_seconds=0.05)
    assert time.perf_counter() - start >= 0.05
    assert 3 <= timed["iterations"] <= 0.05 / 0.002 + 1 and len(calls) == timed["iterations"] + 2
    assert timed["mean"] >= 2.0  # milliseconds of the call itself


def test_batches_from_export_folder_updated_in_place(dynamic_export):
    report = run_bench(BenchOptions(from_dir=dynamic_export, batches=(1, 4), **FAST), NullProgress())
    (onnx,) = report["artifacts"]
    assert [c["batch"] for c in onnx["benchmarks"]] == [1, 4]
    assert all(c["status"] == "ok" and c["throughput"] > 0 for c in onnx["benchmarks"])
    assert onnx["latency_ms"]["batch"] == 1 and onnx["latency_ms"]["device"] == "cpu" and onnx["load_seconds"] > 0
    (ref,) = report["reference_runs"]
    assert ref["target"] == "pytorch" and len(ref["benchmarks"]) == 2
    on_disk = json.loads((dynamic_export / "report.json").read_text())
    assert on_disk["bench"]["batches"] == [1, 4] and (dynamic_export / "plot.png").stat().st_size > 1000
    assert "## Benchmark matrix" in (dynamic_export / "report.md").read_text()


def test_fixed_batch_and_broken_artifact_do_not_stop_the_rest(tmp_path, dynamic_export):
    fixed = tmp_path / "fixed"
    run_export(ExportOptions(out=fixed, bench_iters=0, parity_samples=2))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    report = run_bench(BenchOptions(artifacts=(broken, fixed / "model.onnx", dynamic_export / "model.onnx"),
                                    batches=(1, 2), out=tmp_path / "out", **FAST), NullProgress())
    first, second, third = report["artifacts"]
    assert first["status"] == "failed" and first["stage"] == "load"
    assert [c["status"] for c in second["benchmarks"]] == ["ok", "skipped"]
    assert "fixed batch of 1" in second["benchmarks"][1]["reason"]
    assert [c["status"] for c in third["benchmarks"]] == ["ok", "ok"]
    assert (tmp_path / "out" / "report.json").exists() and report["reference_runs"] == []


def test_accuracy_with_eval(dynamic_export, tmp_path):
    eval_dir = tmp_path / "ev"
    for cls in sorted(bundled_images("val").iterdir()):
        (eval_dir / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:2]:
            shutil.copy(f, eval_dir / cls.name / f.name)
    report = run_bench(BenchOptions(from_dir=dynamic_export, eval_dir=eval_dir, **FAST), NullProgress())
    acc = report["artifacts"][0]["accuracy"]
    assert acc["samples"] == 20 and acc["agreement"] == 1.0 and acc["drop"] == 0.0
    assert report["reference_runs"][0]["accuracy"]["top1"] == acc["top1_fp32"]


@pytest.mark.parametrize("text", ["0", "1,x", "", "5000"])
def test_bad_batches(text):
    with pytest.raises(UserInputError, match="--batch"):
        parse_batches(text)


def test_cli_bench_inputs(tmp_path, dynamic_export):
    assert run("bench").returncode == 2
    result = run("bench", str(tmp_path / "missing.onnx"))
    assert result.returncode == 2 and "artifact not found" in result.stderr
    result = run("bench", "--from", str(tmp_path))
    assert result.returncode == 2 and "no report.json" in result.stderr
    (tmp_path / "x.txt").write_text("hi")
    result = run("bench", str(tmp_path / "x.txt"))
    assert result.returncode == 2 and "unknown artifact type" in result.stderr
    result = run("bench", "--from", str(dynamic_export), "--batch", "1,2", "--iters", "3", "--min-time", "0",
                 "--no-reference", "--json")
    assert result.returncode == 0, result.stderr
    assert [c["batch"] for c in json.loads(result.stdout)["artifacts"][0]["benchmarks"]] == [1, 2]


def test_throughput_hint_on_a_runtime_without_async_requests_says_so(dynamic_export, tmp_path):
    report = run_bench(BenchOptions(artifacts=(dynamic_export / "model.onnx",), batches=(1,), hint="throughput",
                                    out=tmp_path / "bench", reference=False, **FAST), NullProgress())
    cell = report["artifacts"][0]["benchmarks"][0]
    assert cell["status"] == "ok" and "async" not in cell
    assert "one request at a time" in cell["async_skipped"] and "OpenVINO" in cell["async_skipped"]
