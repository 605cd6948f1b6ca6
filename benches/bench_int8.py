"""INT8 (ONNX Runtime encoding) vs the FP32 deploy-form ONNX, ONNX Runtime CPU.

    python benches/bench_int8.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40] [--calib 256]

One process: exports the FP32 deploy form as `rmt-deploy export --target onnx` ships it (the
ONNX Runtime encoding: fused Attention and RotaryEmbedding), calibrates INT8 on --calib real
images from the bundled calib/train from the same encoding (wall time printed: the ≤ 90 s
target), then times interleaved (A B C A B C …) the FP32 model, the ONNX Runtime INT8 model and,
for context, the FP32 generic encoding (what TensorRT and OpenVINO get). Every session has
session.force_spinning_stop=1. Prints medians and ratios; read the ratios, not absolute times.
Weights are random (official checkpoints are not reachable here): speed does not depend on them.
"""
from __future__ import annotations

import time

import onnx
from common import bench_setup, calibration_samples, export_deploy_fp32, interleaved_medians, random_input

from rmt_deploy.quant.checks import quantizer_summary
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets.onnx import export_for_calibration


def main() -> None:
    bench = bench_setup(__doc__, "int8", calib=True)
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    paths = {"fp32": work / "fp32.onnx", "int8 (onnxruntime)": work / "int8_ort.onnx",
             "fp32 (generic ops)": work / "fp32_generic.onnx"}
    export_deploy_fp32(bench, paths["fp32"])
    export_deploy_fp32(bench, paths["fp32 (generic ops)"], encoding="generic")

    start = time.perf_counter()
    samples = calibration_samples(args.calib, size)
    graph = export_for_calibration(model, size, dynamic_batch=False, encoding="onnxruntime")
    result = calibrate_int8(graph, samples, QuantPolicy())
    onnx.save(result.onnxruntime, str(paths["int8 (onnxruntime)"]))
    wall = time.perf_counter() - start

    runners = {name: onnx_target.OnnxRuntimeRunner(p, args.threads) for name, p in paths.items()}
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)

    print(f"{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          "interleaved runs (ONNX Runtime CPU)")
    print(f"calibration: {len(samples)} images, NNCF {result.calib_seconds:.1f} s, "
          f"whole INT8 export {wall:.1f} s wall (target <= 90 s)")
    print(f"onnxruntime encoding: {quantizer_summary(result.onnxruntime)['quantized_layers']} int8, "
          f"{len(result.float_for_speed)} layers float")
    print(f"{'model':32s} {'p50 ms':>8s}")
    for name, m in medians.items():
        print(f"{name:32s} {m:8.2f}")
    base = medians["fp32"]
    print()
    for name, m in medians.items():
        if name != "fp32":
            print(f"ratio fp32/{name} = {base / m:.2f}" + ("   (target >= 1.5)"
                                                          if name == "int8 (onnxruntime)" else ""))


if __name__ == "__main__":
    main()
