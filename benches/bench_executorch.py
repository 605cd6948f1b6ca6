"""ExecuTorch (XNNPACK) FP32 and INT8 against our ONNX Runtime FP32 and INT8, timed together.

    python benches/bench_executorch.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40] [--calib 256]

One process, the code paths of `rmt-deploy export --target executorch,onnx --int8 --fp32`: lowers the
deploy form in its ExecuTorch encoding to model.pte, quantizes it with PT2E on --calib real images from
the bundled calib/train and lowers model_int8.pte (wall times printed), exports the standard
model.onnx and its INT8, then times all four interleaved (A B C D A B C D …) at batch 1 with
--threads threads each. Prints medians and ratios: read the ratios, not absolute times. This is an
x86 server CPU: an Arm phone's XNNPACK kernels and its ratios will differ. Weights are random
(official checkpoints are not reachable here): speed does not depend on them.
"""
from __future__ import annotations

import time

import onnx
from common import bench_setup, calibration_samples, export_deploy_fp32, interleaved_medians, random_input

from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant import pt2e
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import executorch as et
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets.onnx_export import export_for_calibration


def main() -> None:
    bench = bench_setup(__doc__, "executorch", calib=True)
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    samples = calibration_samples(args.calib, size)
    paths, notes = {}, []

    form = to_deploy(model, size, encoding="xnnpack")
    start = time.perf_counter()
    program, delegation = et.lower(form, (1, 3, *size), "xnnpack", {})
    (work / "model.pte").write_bytes(program)
    notes.append(f"model.pte: lowered in {time.perf_counter() - start:.1f} s, {len(program) / 1e6:.1f} MB, "
                 f"{delegation['delegated_share']:.0%} delegated in {delegation['delegate_calls']} call(s)")
    start = time.perf_counter()
    quantized = pt2e.quantize(form, (1, 3, *size), samples)
    calibrated = time.perf_counter() - start
    program, delegation = et.lower(quantized, (1, 3, *size), "xnnpack", {})
    (work / "model_int8.pte").write_bytes(program)
    notes.append(f"model_int8.pte: PT2E calibration {calibrated:.1f} s, lowered in "
                 f"{time.perf_counter() - start - calibrated:.1f} s, {len(program) / 1e6:.1f} MB, "
                 f"{delegation['delegated_share']:.0%} delegated in {delegation['delegate_calls']} call(s)")
    paths["model.pte"], paths["model_int8.pte"] = work / "model.pte", work / "model_int8.pte"

    paths["model.onnx"] = export_deploy_fp32(bench, work / "model.onnx", encoding="generic")
    graph = export_for_calibration(model, size, dynamic_batch=False, encoding="generic")
    onnx.save(calibrate_int8(graph, samples, QuantPolicy()).onnxruntime, str(work / "model_int8.onnx"))
    paths["model_int8.onnx"] = work / "model_int8.onnx"

    runners = {name: (et.ExecuTorchRunner(p, args.threads) if name.endswith(".pte")
                      else onnx_target.OnnxRuntimeRunner(p, args.threads)) for name, p in paths.items()}
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)

    print(f"{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          f"interleaved runs, {len(samples)} calibration images")
    print("\n".join(notes))
    print(f"{'file':18s} {'p50 ms':>8s}")
    for name, m in medians.items():
        print(f"{name:18s} {m:8.2f}")
    print()
    print(f"ExecuTorch / ONNX Runtime time: fp32 {medians['model.pte'] / medians['model.onnx']:.2f}, "
          f"int8 {medians['model_int8.pte'] / medians['model_int8.onnx']:.2f}")
    print(f"FP32 / INT8 time: ExecuTorch {medians['model.pte'] / medians['model_int8.pte']:.2f}, "
          f"ONNX Runtime {medians['model.onnx'] / medians['model_int8.onnx']:.2f}")


if __name__ == "__main__":
    main()
