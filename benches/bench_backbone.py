"""Detection/segmentation backbone: our deploy form (FP32, INT8) vs the reference exported as-is, with
OpenVINO's figures beside them, and each file's peak memory for one image in a fresh process.

    python benches/bench_backbone.py [--arch rmt-t] [--size 512] [--threads 2] [--rounds 20] [--calib 32]
    python benches/bench_backbone.py --size 800x1344 --rounds 20
    python benches/bench_backbone.py --arch rmt-l --size 800x1344 --rounds 20 --no-reference --no-int8 --no-openvino

One process, RMT backbone (random weights: speed ignores them; out_indices 0-3) at batch 1:
  deploy fp32      our deploy form, ONNX Runtime encoding (`rmt-deploy export --task backbone --target onnxruntime`)
  deploy int8      its ONNX Runtime INT8 (7-bit weights, calibrated with NNCF on --calib bundled images)
  openvino fp32    the standard encoding as the openvino target's IR, compiled at f32
  openvino int8    its NNCF INT8 (the openvino target's --int8), float layers at f32
  reference fp32   the reference backbone exported directly with torch.onnx.export (dynamo, opset 18,
                   onnxslim not applied: what a user gets without rmt-deploy)
Prints each file's size and export time, the worst feature max |diff| and cosine vs PyTorch, the peak
resident memory of a fresh process that loads it and runs one image (bench.peak_memory: what a device
needs free), the median of --rounds interleaved runs and the ratios. Read the ratios: absolute times on
shared machines are noisy.
"""
from __future__ import annotations

import json
import time
import warnings

import numpy as np
import torch
from common import bench_setup, interleaved_medians, random_input

from rmt_deploy.bench import peak_memory
from rmt_deploy.bundled import bundled_images
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.quant.calibrate import quantize_openvino
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import chunk_plan, to_deploy
from rmt_deploy.targets import TARGETS
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import openvino
from rmt_deploy.targets.onnx_export import _quiet_exporter, export_for_calibration

NAMES = ["feat0", "feat1", "feat2", "feat3"]
F32 = json.dumps({"INFERENCE_PRECISION_HINT": "f32"})  # float layers as verified, not the CPU's bf16 default


def _extra(ap) -> None:
    ap.add_argument("--no-reference", action="store_true", help="skip the reference export (tens of GiB for RMT-L)")
    ap.add_argument("--no-int8", action="store_true", help="FP32 files only")
    ap.add_argument("--no-openvino", action="store_true", help="ONNX Runtime files only")


def main() -> None:
    bench = bench_setup(__doc__, "backbone", rounds=20, calib=True, extra=_extra)
    args, size, work = bench.args, bench.size, bench.work
    torch.manual_seed(0)
    model = create_backbone(args.arch).eval()
    x = random_input(size)
    files = {}  # name → (path, runtime that runs it)
    print(f"{args.arch} backbone at {size[0]}x{size[1]} into {work} …", flush=True)

    def timed(name, runtime, make):
        start = time.perf_counter()
        path = make()
        files[name] = (path, runtime)
        print(f"  {name:15s} made in {time.perf_counter() - start:6.1f} s", flush=True)

    deploy = to_deploy(model, size, encoding="onnxruntime")
    print(f"  attention chunks per stage: {chunk_plan(deploy)}")
    timed("deploy fp32", "onnxruntime", lambda: onnx_target.export(deploy, work / "deploy.onnx", size,
                                                                    dynamic_batch=False, metadata={}))
    if not args.no_openvino:
        generic = onnx_target.export(to_deploy(model, size), work / "generic.onnx", size, dynamic_batch=False,
                                     metadata={})
        ov_fp32 = openvino.convert(generic)
        timed("openvino fp32", "openvino", lambda: openvino.save(ov_fp32, work / "ov_fp32.xml",
                                                                 {"precision": "fp32"}))
    if not args.no_int8:
        pre = Preprocess(size, crop_pct=1.0, interpolation="bilinear", resize="letterbox")
        samples, _, _ = load_batch(open_image_set(bundled_images("train")).subset(args.calib), pre)

        def ort_int8():
            graph = export_for_calibration(model, size, dynamic_batch=False, encoding="onnxruntime")
            return onnx_target.save(calibrate_int8(graph, samples, QuantPolicy()).onnxruntime,
                                    work / "deploy_int8.onnx", {})
        timed("deploy int8", "onnxruntime", ort_int8)
        if not args.no_openvino:
            timed("openvino int8", "openvino", lambda: openvino.save(
                quantize_openvino(ov_fp32.clone(), samples, QuantPolicy()), work / "ov_int8.xml",
                {"precision": "int8", "compile_config": F32}))
    if not args.no_reference:
        def reference():
            with _quiet_exporter(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.from_numpy(x),), str(work / "reference.onnx"), dynamo=True,
                                  opset_version=18, input_names=["input"], output_names=NAMES, external_data=False)
            return work / "reference.onnx"
        timed("reference fp32", "onnx", reference)

    print(f"\nEach file: worst feature vs PyTorch, and one image in a fresh process ({args.threads} threads)")
    print(f"  {'file':15s} {'size':>9s} {'max |diff|':>10s} {'cosine':>9s} {'MiB at load':>11s} {'MiB peak':>9s}")
    with torch.inference_mode():
        ref = [t.numpy().astype(np.float64) for t in model(torch.from_numpy(x))]
    runners, memory = {}, {}
    for name, (path, runtime) in files.items():
        memory[name] = peak_memory.measure(runtime, path, size, args.threads) or {}
        runner = TARGETS[runtime].load(path, args.threads)
        runner.activate()
        out = runner.infer({runner.input_names()[0]: x})
        worst = max(float(np.abs(out[n] - f).max()) for n, f in zip(NAMES, ref))
        cosine = min(float(np.dot(out[n].ravel(), f.ravel()) / np.linalg.norm(out[n]) / np.linalg.norm(f))
                     for n, f in zip(NAMES, ref))
        runner.deactivate()
        runners[name] = runner
        m = memory[name]
        print(f"  {name:15s} {_mb(path):>9s} {worst:10.2e} {cosine:9.6f} {m.get('load_mb', '-'):>11} "
              f"{m.get('peak_mb', m.get('error', '-')):>9}", flush=True)
    median = interleaved_medians(runners, x, args.warmup, args.rounds)
    for r in runners.values():
        r.deactivate()
    print(f"\n{args.arch} backbone, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          "interleaved runs")
    for name, ms in median.items():
        print(f"  {name:15s} {ms:9.1f} ms")
    print()
    for a, b in (("reference fp32", "deploy fp32"), ("deploy fp32", "deploy int8"), ("deploy fp32", "openvino fp32"),
                 ("openvino fp32", "openvino int8"), ("reference fp32", "openvino fp32")):
        if a in median and b in median:
            print(f"ratio {a} / {b} = {median[a] / median[b]:.2f}")


def _mb(path) -> str:
    size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)
    return f"{size / 1e6:.1f} MB"


if __name__ == "__main__":
    main()
