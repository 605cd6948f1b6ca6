"""What --dynamic costs: the dynamic-size artifact against the fixed-size one at the verified size.

    python benches/bench_dynamic.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40]

A dynamic artifact builds its decay and rotary tables in the graph on every run (once per stage);
a fixed one holds them as constants the runtime folds at load. Exports both FP32 forms of --arch at
--size (the dynamic one for sides from half to twice --size), for ONNX Runtime in both encodings
(model.onnx, model.ort.onnx) and for OpenVINO (IR from model.onnx, compiled with the setting
rmt-deploy verifies with), checks the two give the same logits, then times them interleaved
(A B A B …) and prints dynamic / fixed per runtime (target ≤ 1.1). For OpenVINO it times the
dynamic IR twice: compiled as is (what a default ``compile_model`` gets) and through rmt-deploy's
runner, which compiles a static copy for the verified size. Read the ratios: absolute times on
shared machines are noisy.
"""
from __future__ import annotations

import numpy as np
from common import bench_setup, interleaved_medians, random_input

from rmt_deploy.rewrite import to_deploy
from rmt_deploy.sizes import SizeRange
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import openvino as ov_target


def main() -> None:
    bench = bench_setup(__doc__, "dynamic", rounds=40)
    args, size, work = bench.args, bench.size, bench.work
    size_range = SizeRange.around(size)
    print(f"exporting {args.arch} at {size[0]}x{size[1]} (dynamic: sides {size_range}) into {work} …", flush=True)
    onnx_files = {}
    for encoding, stem in (("generic", "model"), ("onnxruntime", "model.ort")):
        for mode in ("fixed", "dynamic"):
            dynamic = mode == "dynamic"
            deploy = to_deploy(bench.model, size, encoding=encoding, dynamic=dynamic)
            onnx_files[f"{stem}.onnx {mode}"] = onnx_target.export(
                deploy, work / f"{stem}_{mode}.onnx", size, dynamic_batch=dynamic, metadata={},
                size_range=size_range if dynamic else None)
    runners = {name: onnx_target.TARGET.load(path, threads=args.threads) for name, path in onnx_files.items()}
    verified = {"precision": "fp32", "compile_config": '{"EXECUTION_MODE_HINT": "ACCURACY"}'}
    for mode in ("fixed", "dynamic"):
        ir = work / f"model_{mode}.xml"
        ov_target.save(ov_target.convert(onnx_files[f"model.onnx {mode}"]), ir, verified)
        runners[f"openvino {mode}"] = ov_target.TARGET.load(ir, threads=args.threads)
    # The same dynamic IR with rmt-deploy's metadata: our runner (rd.load, bench, verification) adds a
    # static copy for the verified size; "openvino dynamic" above is what a default compile gets.
    ir = work / "model_dynamic_recorded.xml"
    ov_target.save(ov_target.convert(onnx_files["model.onnx dynamic"]), ir,
                   {**verified, "dynamic_size": str(size_range), "input_size": f"{size[0]}x{size[1]}"})
    runners["openvino rd.load dynamic"] = ov_target.TARGET.load(ir, threads=args.threads)

    x = random_input(size)
    for name, runner in runners.items():
        runner.activate()
    logits = {name: next(iter(r.infer({r.input_names()[0]: x}).values())) for name, r in runners.items()}
    for name in runners:
        if name.endswith("dynamic"):
            fixed = name.replace("rd.load ", "").replace("dynamic", "fixed")
            print(f"  {name:26s} max |logits - fixed| = {np.abs(logits[name] - logits[fixed]).max():.2e}")

    median = interleaved_medians(runners, x, args.warmup, args.rounds)
    print(f"\n{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          "interleaved runs (FP32)")
    print(f"{'artifact':28s} {'p50 ms':>8s}")
    for name, ms in median.items():
        print(f"{name:28s} {ms:8.2f}")
    print()
    for name in median:
        if name.endswith("dynamic"):
            base = name.removesuffix(" dynamic")
            ratio = median[name] / median[name.replace("rd.load ", "").replace("dynamic", "fixed")]
            print(f"ratio dynamic/fixed  {base:18s} = {ratio:.3f}   (target <= 1.1)")


if __name__ == "__main__":
    main()
