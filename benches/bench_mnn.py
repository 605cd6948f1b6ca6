"""MNN FP32, FP16-weight and INT8 against ONNX Runtime on the standard model.onnx, timed together.

    python benches/bench_mnn.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40] [--calib 64]

One process, the code paths of `rmt-deploy export --target onnx,mnn --fp32 --fp16 --int8`: exports the
standard model.onnx (wall time printed), converts it to model.mnn and model_fp16.mnn and quantizes
model_int8.mnn with MNN's offline quantizer on --calib real images from the bundled calib/train (wall
times printed), then times ONNX Runtime and the three MNN files interleaved at batch 1 with --threads
threads each. Prints medians and ratios: read the ratios, not absolute times. MNN's thread pool waits
badly for busy cores: run it on an otherwise idle machine. Weights are random (official checkpoints
are not reachable here): speed does not depend on them.
"""
from __future__ import annotations

import time

from common import bench_setup, calibration_samples, export_deploy_fp32, interleaved_medians, random_input

from rmt_deploy.targets import mnn
from rmt_deploy.targets import onnx as onnx_target


def main() -> None:
    bench = bench_setup(__doc__, "mnn", calib=True)
    args, size, work = bench.args, bench.size, bench.work
    samples = calibration_samples(args.calib, size)
    seconds = {}
    start = time.perf_counter()
    onnx_path = export_deploy_fp32(bench, work / "model.onnx", encoding="generic")
    seconds["ONNX export (deploy form → model.onnx)"] = time.perf_counter() - start
    for name, fp16 in (("model.mnn", False), ("model_fp16.mnn", True)):
        start = time.perf_counter()
        mnn.convert(onnx_path, work / name, {"precision": "fp16" if fp16 else "fp32"}, fp16=fp16)
        seconds[f"{name} (convert)"] = time.perf_counter() - start
    start = time.perf_counter()
    mnn.quantize(work / "model.mnn", samples, work / "model_int8.mnn", {"precision": "int8"}, "input")
    seconds[f"model_int8.mnn (quantize on {len(samples)} images)"] = time.perf_counter() - start
    for what, s in seconds.items():
        print(f"{what}: {s:.1f} s")

    runners = {"onnxruntime model.onnx": onnx_target.TARGET.load(onnx_path, args.threads)}
    runners.update({f"mnn {name}": mnn.MNNRunner(work / name, args.threads)
                    for name in ("model.mnn", "model_fp16.mnn", "model_int8.mnn")})
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)
    base = medians["onnxruntime model.onnx"]
    print(f"\n{args.arch} {size[0]}x{size[1]}, batch 1, {args.threads} threads, median of {args.rounds} interleaved runs")
    for name, ms in medians.items():
        print(f"  {name:28s} {ms:8.2f} ms   {ms / base:5.2f}x ONNX Runtime")


if __name__ == "__main__":
    main()
