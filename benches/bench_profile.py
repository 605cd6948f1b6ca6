"""Where the time goes: ONNX Runtime's per-op profile of the FP32 deploy form and its INT8 encoding.

    python benches/bench_profile.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 20] [--calib 64]

One process: exports the FP32 deploy form and the ONNX Runtime INT8 model (calibrated on --calib
bundled images), runs each --rounds times with ONNX Runtime's profiler on, and prints, per op type,
the share of the summed kernel time, how many nodes of that type ran per inference and the
milliseconds per inference — and the non-GEMM share (everything but Conv, Gemm, MatMul and their
fused/int8 forms), the figure #18 targets. Shares are what to read: the profiler adds overhead, and
absolute times on a shared machine are noisy.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import onnx
from common import bench_setup, calibration_samples, export_deploy_fp32, random_input

from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.targets.onnx_export import export_for_calibration

# Op types that are the network's matrix work (what INT8 speeds up); the rest is "non-GEMM".
GEMM_OPS = {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "QLinearConv", "QLinearMatMul",
            "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "NhwcFusedConv",
            "QLinearGemm"}


def profile(path: Path, x, threads: int, warmup: int, rounds: int) -> dict[str, dict]:
    """Op type → {"us": total kernel microseconds, "count": node runs}, over ``rounds`` inferences."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x}
    for _ in range(warmup):
        session.run(None, feeds)
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(warmup + rounds):
        session.run(None, feeds)
    trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first = runs[warmup]["ts"] if len(runs) > warmup else 0  # skip the warm-up runs' nodes
    totals: dict[str, dict] = defaultdict(lambda: {"us": 0.0, "count": 0})
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= first:
            op = event.get("args", {}).get("op_name", "?")
            totals[op]["us"] += event["dur"]
            totals[op]["count"] += 1
    return dict(totals)


def report(name: str, totals: dict[str, dict], rounds: int) -> None:
    whole = sum(t["us"] for t in totals.values()) or 1.0
    print(f"\n{name}: {whole / rounds / 1000:.2f} ms of kernels per inference")
    print(f"  {'op type':28s} {'share':>7s} {'nodes':>6s} {'ms/inf':>7s}")
    for op, t in sorted(totals.items(), key=lambda kv: -kv[1]["us"]):
        if t["us"] / whole >= 0.002:
            print(f"  {op:28s} {t['us'] / whole:7.1%} {t['count'] // rounds:6d} {t['us'] / rounds / 1000:7.2f}")
    other = sum(t["us"] for op, t in totals.items() if op not in GEMM_OPS)
    print(f"  non-GEMM share (all but {', '.join(sorted(GEMM_OPS & set(totals)))}): {other / whole:.1%}")
    if "Attention" in totals:  # the fused op is mostly its two matrix products, partly mask add and softmax
        fused = totals["Attention"]["us"]
        print(f"  non-GEMM share with the fused Attention counted as GEMM work: {(other - fused) / whole:.1%}")


def main() -> None:
    bench = bench_setup(__doc__, "profile", rounds=20, calib=True)
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
    export_deploy_fp32(bench, fp32, encoding="onnxruntime")
    samples = calibration_samples(args.calib, size)
    onnx.save(calibrate_int8(export_for_calibration(model, size, dynamic_batch=False, encoding="onnxruntime"), samples,
                             QuantPolicy()).onnxruntime, str(int8))
    x = random_input(size)
    print(f"{args.arch} at {size[0]}x{size[1]}, batch 1, {args.threads} threads, {args.rounds} profiled runs "
          f"(ONNX Runtime CPU)")
    for name, path in (("FP32 deploy form", fp32), ("INT8 (ONNX Runtime encoding)", int8)):
        report(name, profile(path, x, args.threads, args.warmup, args.rounds), args.rounds)


if __name__ == "__main__":
    main()
