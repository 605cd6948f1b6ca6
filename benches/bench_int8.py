"""The four CPU ONNX files, timed together: standard vs ONNX Runtime-tuned, FP32 and INT8.

    python benches/bench_int8.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40] [--calib 256]

One process, the code paths of `rmt-deploy export --target onnx,onnxruntime --int8`: exports the FP32
deploy form in both encodings (``rewrite.ENCODINGS``: the standard model.onnx, generic ai.onnx ops at
opset 17, and model.ort.onnx, ONNX Runtime's fused Attention and RotaryEmbedding), calibrates INT8 on
--calib real images from the bundled calib/train once per encoding (7-bit CPU grid; wall time
printed: the ≤ 90 s target), then times interleaved (A B C D A B C D …) all four in ONNX Runtime.
Every session has session.force_spinning_stop=1. Prints medians and ratios; read the ratios, not
absolute times. Weights are random (official checkpoints are not reachable here): speed does not
depend on them.
"""
from __future__ import annotations

import time

import onnx
from common import bench_setup, calibration_samples, export_deploy_fp32, interleaved_medians, random_input

from rmt_deploy.quant.checks import quantizer_summary
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets.onnx_export import export_for_calibration

FILES = {"generic": ("model.onnx", "model_int8.onnx"), "onnxruntime": ("model.ort.onnx", "model_int8.ort.onnx")}


def main() -> None:
    bench = bench_setup(__doc__, "int8", calib=True)
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    samples = calibration_samples(args.calib, size)
    paths, notes = {}, []
    for encoding, (fp32_name, int8_name) in FILES.items():
        paths[fp32_name] = export_deploy_fp32(bench, work / fp32_name, encoding=encoding)
        start = time.perf_counter()
        graph = export_for_calibration(model, size, dynamic_batch=False, encoding=encoding)
        result = calibrate_int8(graph, samples, QuantPolicy())
        onnx.save(result.onnxruntime, str(work / int8_name))
        paths[int8_name] = work / int8_name
        notes.append(f"{int8_name}: {sum(quantizer_summary(result.onnxruntime)['quantized_layers'].values())} int8 layers, "
                     f"{len(result.float_for_speed)} float; NNCF {result.calib_seconds:.1f} s, export + calibration "
                     f"{time.perf_counter() - start:.1f} s wall (target <= 90 s)")

    runners = {name: onnx_target.OnnxRuntimeRunner(p, args.threads) for name, p in paths.items()}
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)

    print(f"{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          f"interleaved runs (ONNX Runtime CPU), {len(samples)} calibration images")
    print("\n".join(notes))
    print(f"{'file':24s} {'p50 ms':>8s}")
    for name, m in medians.items():
        print(f"{name:24s} {m:8.2f}")
    print()
    for precision, (standard, tuned) in (("fp32", ("model.onnx", "model.ort.onnx")),
                                         ("int8", ("model_int8.onnx", "model_int8.ort.onnx"))):
        print(f"{precision}: standard / ONNX Runtime-tuned time = {medians[standard] / medians[tuned]:.2f}")
    for fp32_name, int8_name in FILES.values():
        print(f"{fp32_name} / {int8_name} = {medians[fp32_name] / medians[int8_name]:.2f}"
              + ("   (target >= 1.5)" if int8_name == "model_int8.ort.onnx" else ""))


if __name__ == "__main__":
    main()
