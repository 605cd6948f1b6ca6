"""Comparators on synthetic inputs with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from rmt_deploy.bench.accuracy import topk_accuracy
from rmt_deploy.bench.latency import measure, summarize
from rmt_deploy.bench.parity import compare_logits


def test_compare_logits_identical_and_perturbed():
    ref = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    same = compare_logits(ref, ref.copy())
    assert same["max_abs"] == 0 and same["cosine"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    flipped = ref.copy()
    flipped[0] = -flipped[0]
    res = compare_logits(ref, flipped)
    assert res["cosine"] == pytest.approx(-1.0) and res["top1_agreement"] == pytest.approx(7 / 8)
    assert res["max_abs"] == pytest.approx(2 * np.abs(ref[0]).max())


def test_compare_logits_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        compare_logits(np.zeros((2, 3)), np.zeros((2, 4)))


def test_topk():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(logits, np.array([1, 1, 0]), ks=(1, 2, 5))
    assert acc == {"top1": pytest.approx(100 / 3, abs=1e-3), "top2": pytest.approx(200 / 3, abs=1e-3), "top5": 100.0}


def test_latency_summary_percentiles():
    stats = summarize([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01) and stats["mean"] == pytest.approx(50.5)
    assert stats["iterations"] == 100


def test_measure_uses_backend_time_when_given():
    calls = []
    stats = measure(lambda: calls.append(1) or 0.002, warmup=3, min_iters=10)
    assert len(calls) == 13 and stats["p50"] == pytest.approx(2.0) and stats["warmup"] == 3
