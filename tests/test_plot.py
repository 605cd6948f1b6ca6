"""plot.png: useful for the one-artifact report a new user sees first, never a top-1 above 100 %."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from rmt_deploy.bench.plot import figure, write_plot

LIMITS = {"fp16": 0.999, "bf16": 0.98, "int8": 0.95}


def _entry(precision: str, p50: float, top1: float | None, cosine: float, benchmarks=()) -> dict:
    return {"target": "onnx", "precision": precision, "status": "ok", "latency_ms": {"p50": p50},
            "accuracy": None if top1 is None else {"top1": top1, "top1_fp32": 100.0},
            "parity": {"cosine": cosine, "max_abs": 1e-6}, "benchmarks": list(benchmarks)}


def _report(*artifacts) -> dict:
    return {"model": {"variant": "rmt-demo", "input_size": [64, 64]}, "verification": {"min_cosine": LIMITS},
            "artifacts": list(artifacts)}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_one_artifact_gets_two_filled_panels_and_no_top1_above_100():
    fig = figure(_report(_entry("fp32", 0.5, 100.0, 1.0)))
    accuracy, closeness = fig.axes
    assert len(accuracy.collections) == 1 and accuracy.get_ylim()[1] > 100.0  # the dot is not on the frame
    assert max(accuracy.get_yticks()) <= 100.0
    assert len(closeness.patches) == 1 and closeness.get_xscale() == "log"
    assert "< 1e-09" in " ".join(t.get_text() for t in closeness.texts)  # 1 − cosine of 0 is said, not plotted as 0


def test_the_slowest_dot_is_inside_the_frame():
    fig = figure(_report(_entry("fp32", 0.5, 100.0, 1.0), _entry("int8", 0.53, 100.0, 0.9999)))
    assert fig.axes[0].get_xlim()[1] >= 0.53 * 1.05  # not cut in half by the right edge


def test_closeness_shows_each_artifacts_gap_and_its_precisions_limit():
    fig = figure(_report(_entry("fp32", 0.5, 100.0, 1.0), _entry("int8", 0.4, 99.7, 0.99997)))
    closeness = fig.axes[1]
    widths = [p.get_width() for p in closeness.patches]
    assert widths[1] == pytest.approx(3e-5, rel=1e-3) and widths[0] < 1e-8
    limits = [line.get_xdata()[0] for line in closeness.lines]
    assert limits == [pytest.approx(1 - LIMITS["int8"])]  # only the precisions shown; fp32 is judged by atol
    assert fig.axes[0].get_ylim()[0] < 99.7


def test_batch_panel_appears_after_bench_and_backbones_get_latency_bars(tmp_path):
    cells = [{"batch": b, "latency_ms": {"p50": 0.5 * b}} for b in (1, 4, 8)]
    fig = figure(_report(_entry("fp32", 0.5, 100.0, 1.0, cells)))
    assert len(fig.axes) == 3 and [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["1", "4", "8"]
    uncompared = dict(_entry("fp32", 0.5, None, 1.0, cells), parity=None)
    assert len(figure(_report(uncompared)).axes) == 2  # latency and batch: no empty closeness panel
    backbone = figure(_report(_entry("int8", 3.0, None, 0.999)))
    assert len(backbone.axes[0].patches) == 1  # no labels: latency bars instead of accuracy
    assert write_plot(tmp_path / "plot.png", _report(_entry("int8", 3.0, None, 0.999))).read_bytes()[:4] == b"\x89PNG"


def test_nothing_measured_writes_nothing(tmp_path):
    skipped = {"target": "coreml", "precision": "fp16", "status": "skipped", "latency_ms": None, "parity": None}
    assert write_plot(tmp_path / "plot.png", _report(skipped)) is None and not (tmp_path / "plot.png").exists()
