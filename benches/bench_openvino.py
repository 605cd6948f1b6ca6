"""OpenVINO INT8 vs ONNX Runtime FP32 and vs OpenVINO's own default (bf16 on AMX CPUs).

    python benches/bench_openvino.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40] [--calib 256]

One process, the same code paths as `rmt-deploy export --target openvino`: exports the FP32
deploy form, converts it to OpenVINO IR (FP32 and FP16 weights), calibrates INT8 with NNCF's
OpenVINO backend on --calib real images (wall time printed), then times interleaved
(A B C … A B C …): ONNX Runtime on the FP32 deploy-form ONNX, OpenVINO FP32 (f32 execution),
OpenVINO FP16 IR (the device default: bf16 on AMX) and OpenVINO INT8. Batch 1, synchronous
requests, latency hint. Prints medians, the precision each OpenVINO model really ran in, and
ratios; read the ratios, not absolute times. Weights are random (official checkpoints are
not reachable here): speed does not depend on them.
"""
from __future__ import annotations

import time

from common import bench_setup, calibration_samples, export_deploy_fp32, interleaved_medians, random_input

from rmt_deploy.quant.calibrate import quantize_openvino
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import openvino as ov_target


def main() -> None:
    bench = bench_setup(__doc__, "ov", calib=True)
    args, size, work = bench.args, bench.size, bench.work
    deploy_onnx = export_deploy_fp32(bench, work / "fp32.onnx", encoding="onnxruntime")  # model.ort.onnx
    generic_onnx = export_deploy_fp32(bench, work / "fp32_generic.onnx", encoding="generic")  # what OpenVINO reads
    float_model = ov_target.convert(generic_onnx)
    paths = {"ov fp32 (f32)": work / "model.xml", "ov fp16 (device default)": work / "model_fp16.xml",
             "ov int8": work / "model_int8.xml"}
    ov_target.save(float_model, paths["ov fp32 (f32)"], {"precision": "fp32"})
    ov_target.save(float_model, paths["ov fp16 (device default)"], {"precision": "fp16"})

    start = time.perf_counter()
    samples = calibration_samples(args.calib, size)
    calib_start = time.perf_counter()
    quantized = quantize_openvino(ov_target.convert(generic_onnx), samples, QuantPolicy())
    calib_seconds = time.perf_counter() - calib_start
    ov_target.save(quantized, paths["ov int8"], {"precision": "int8"})
    wall = time.perf_counter() - start

    runners = {"ort fp32": onnx_target.OnnxRuntimeRunner(deploy_onnx, args.threads)}
    # As `rmt-deploy export` does not save them: no compile_config, so each runs at the device default,
    # except FP32 (f32, as rmt-deploy < 0.4 ran FP32 IRs). benches/bench_openvino_precision.py compares settings.
    runners.update({name: ov_target.OpenVINORunner(p, args.threads) for name, p in paths.items()})
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)

    print(f"{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          "interleaved runs (ONNX Runtime CPU vs OpenVINO CPU, latency hint)")
    print(f"INT8: {len(samples)} calibration images, NNCF {calib_seconds:.1f} s, "
          f"images + calibration + save {wall:.1f} s wall")
    print(f"{'model':28s} {'p50 ms':>8s}  ran as")
    for name, m in medians.items():
        run = runners[name].execution()
        ran = (f"{run['inference_precision']}; layers {run['layers_by_precision']}" if run
               else "fp32 (onnxruntime)")
        print(f"{name:28s} {m:8.2f}  {ran}")
    print()
    base, ov_default, int8 = medians["ort fp32"], medians["ov fp16 (device default)"], medians["ov int8"]
    print(f"ratio ort fp32 / ov int8               = {base / int8:.2f}   (target >= 2.5)")
    print(f"ratio ov default (bf16) / ov int8      = {ov_default / int8:.2f}   (target >= 1.3)")
    print(f"ratio ort fp32 / ov default (bf16)     = {base / ov_default:.2f}")
    print(f"ratio ort fp32 / ov fp32 (f32)         = {base / medians['ov fp32 (f32)']:.2f}")


if __name__ == "__main__":
    main()
