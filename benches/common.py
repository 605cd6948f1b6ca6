"""What every bench script shares: its command line, set-up and the interleaved timing loop."""
from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Bench", "bench_setup", "export_deploy_fp32", "bench_args", "calibration_samples", "random_input",
           "interleaved_medians"]


def bench_args(doc: str, rounds: int = 40, calib: bool = False, extra=None) -> argparse.Namespace:
    """--arch --size --threads --rounds --warmup [--calib], plus what ``extra(parser)`` adds;
    the rounds floor checked."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="rmt-t")
    ap.add_argument("--size", default="224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--warmup", type=int, default=5)
    if calib:
        ap.add_argument("--calib", type=int, default=256, help="calibration images")
    if extra:
        extra(ap)
    args = ap.parse_args()
    if args.rounds < 20:
        ap.error("--rounds must be at least 20 for a stable median")
    return args


@dataclass
class Bench:
    args: argparse.Namespace
    size: tuple[int, int]
    model: object  # the reference RMT (random weights: speed does not depend on them), eval mode
    work: Path  # a fresh temporary folder for this run's models


def bench_setup(doc: str, prefix: str, rounds: int = 40, calib: bool = False, extra=None) -> Bench:
    """Parse the command line, seed torch, build --arch at --size and make a work folder."""
    import torch

    from rmt_deploy.model.rmt import create_model
    from rmt_deploy.sizes import parse_img_size

    args = bench_args(doc, rounds=rounds, calib=calib, extra=extra)
    torch.manual_seed(0)
    return Bench(args, parse_img_size(args.size), create_model(args.arch).eval(),
                 Path(tempfile.mkdtemp(prefix=f"rmt-bench-{prefix}-")))


def export_deploy_fp32(bench: Bench, path: Path, *, encoding: str) -> Path:
    """The FP32 deploy-form ONNX at batch 1 in ``encoding`` (``rewrite.ENCODINGS``): "generic" is the
    standard model.onnx (`--target onnx`; also what TensorRT and OpenVINO read), "onnxruntime" is
    model.ort.onnx (`--target onnxruntime`)."""
    from rmt_deploy.rewrite import to_deploy
    from rmt_deploy.targets import onnx as onnx_target

    return onnx_target.export(to_deploy(bench.model, bench.size, encoding=encoding), path, bench.size,
                              dynamic_batch=False, metadata={})


def calibration_samples(count: int, size: tuple[int, int]) -> np.ndarray:
    """The first ``count`` (evenly spread) bundled calib/train images, preprocessed as export does."""
    from rmt_deploy.bundled import bundled_images
    from rmt_deploy.data.images import Preprocess, load_batch, open_image_set

    samples, _, _ = load_batch(open_image_set(bundled_images("train")).subset(count), Preprocess(size))
    return samples


def random_input(size: tuple[int, int]) -> np.ndarray:
    """One (1, 3, H, W) float32 image of noise, the same in every script: speed ignores content."""
    return np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)


def interleaved_medians(runners: dict, x: np.ndarray, warmup: int, rounds: int) -> dict[str, float]:
    """Median backend-call milliseconds per runner, timed A B C … A B C … so that machine noise
    hits every runner alike. Runners are activated if they are not yet; each is fed ``x`` under
    its own input name."""
    for r in runners.values():
        r.activate()
    feeds = {name: {r.input_names()[0]: x} for name, r in runners.items()}
    for _ in range(warmup):
        for name, r in runners.items():
            r.infer(feeds[name])
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, r in runners.items():
            r.infer(feeds[name])
            times[name].append(r.last_inference_s * 1000)
    return {name: statistics.median(t) for name, t in times.items()}
