"""LiteRT FP32, FP16-weight and INT8 against ONNX Runtime on the standard model.onnx, timed together.

    python benches/bench_litert.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40] [--calib 64]

One process, the code paths of `rmt-deploy export --target onnx,litert --fp32 --fp16 --int8`: exports
the standard model.onnx and calibrates its INT8 with NNCF (wall times printed, to set the LiteRT
times against), converts the deploy form (ExecuTorch encoding) to
model.tflite, casts its weights for model_fp16.tflite, calibrates PT2E INT8 on --calib real images from
the bundled calib/train and converts model_int8.tflite (wall times printed), then times ONNX Runtime
and the three LiteRT files interleaved at batch 1 with --threads threads each, and prints how much of
each file XNNPACK took and the INT8 file's worst cosine vs FP32 on the calibration images. Prints
medians and ratios: read the ratios, not absolute times. Weights are random (official checkpoints are
not reachable here): speed does not depend on them.
"""
from __future__ import annotations

import time

import numpy as np
from common import bench_setup, calibration_samples, export_deploy_fp32, interleaved_medians, random_input

from rmt_deploy.quant import pt2e
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import litert
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets.onnx_export import export_for_calibration
from rmt_deploy.targets.pt2e_int8 import Int8Candidate


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    bench = bench_setup(__doc__, "litert", calib=True)
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    samples = calibration_samples(args.calib, size)
    seconds = {}
    start = time.perf_counter()
    onnx_path = export_deploy_fp32(bench, work / "model.onnx", encoding="generic")
    seconds["ONNX export (deploy form → model.onnx)"] = time.perf_counter() - start
    start = time.perf_counter()
    calibrate_int8(export_for_calibration(model, size, dynamic_batch=False, encoding="generic"), samples, QuantPolicy())
    seconds[f"ONNX INT8 (export for calibration + NNCF on {len(samples)} images)"] = time.perf_counter() - start

    form = to_deploy(model, size, encoding="xnnpack")
    names = tuple(form.output_names)
    start = time.perf_counter()
    data = litert.convert_module(form, size, names)
    (work / "model.tflite").write_bytes(litert.with_metadata(data, {"precision": "fp32"}))
    seconds["model.tflite (convert)"] = time.perf_counter() - start
    start = time.perf_counter()
    (work / "model_fp16.tflite").write_bytes(litert.with_metadata(litert.fp16_weights(data), {"precision": "fp16"}))
    seconds["model_fp16.tflite (cast weights)"] = time.perf_counter() - start
    start = time.perf_counter()
    calibrated = pt2e.calibrate(form, (1, 3, *size), samples, quantizer="litert")
    seconds[f"INT8 PT2E calibration on {len(samples)} images"] = time.perf_counter() - start
    start = time.perf_counter()
    litert.TARGET.write_int8(Int8Candidate(calibrated, size, names), work / "model_int8.tflite", {"precision": "int8"})
    seconds["model_int8.tflite (convert)"] = time.perf_counter() - start
    for what, s in seconds.items():
        print(f"{what}: {s:.1f} s")
    for name in ("model.tflite", "model_fp16.tflite", "model_int8.tflite"):
        facts = litert.delegation(work / name)
        print(f"{name}: {(work / name).stat().st_size / 1e6:.1f} MB, XNNPACK took {facts['delegated_ops']} of "
              f"{facts['ops']} ops in {facts['delegate_calls']} call(s); "
              f"LiteRT kernels: {facts['litert_kernels'] or 'none'}")

    with litert.LiteRTRunner(work / "model.tflite", args.threads) as fp32, \
            litert.LiteRTRunner(work / "model_int8.tflite", args.threads) as int8:
        worst = min(_cosine(next(iter(fp32.infer({"input": x[None]}).values())),
                            next(iter(int8.infer({"input": x[None]}).values()))) for x in samples[:16])
    print(f"INT8 vs FP32 worst cosine on {min(16, len(samples))} calibration images: {worst:.5f}")

    runners = {"onnxruntime model.onnx": onnx_target.TARGET.load(onnx_path, args.threads)}
    runners.update({f"litert {name}": litert.LiteRTRunner(work / name, args.threads)
                    for name in ("model.tflite", "model_fp16.tflite", "model_int8.tflite")})
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)
    base = medians["onnxruntime model.onnx"]
    print(f"\n{args.arch} {size[0]}x{size[1]}, batch 1, {args.threads} threads, "
          f"median of {args.rounds} interleaved runs")
    for name, ms in medians.items():
        print(f"  {name:32s} {ms:8.2f} ms   {ms / base:5.2f}x ONNX Runtime")
    print(f"LiteRT FP32 / INT8 time: {medians['litert model.tflite'] / medians['litert model_int8.tflite']:.2f}")


if __name__ == "__main__":
    main()
