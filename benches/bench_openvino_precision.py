"""OpenVINO on CPUs with bf16: accuracy and speed of each way to compile an IR, in one process.

    python benches/bench_openvino_precision.py [--arch rmt-demo] [--size 64] [--threads 2] [--rounds 40]
                                               [--calib 256] [--images 360]

OpenVINO's CPU plugin computes an IR's float layers in bf16 by default on CPUs with AVX512-BF16 or
AMX. For the FP16 and INT8 IRs (exported as `rmt-deploy export --target openvino` does: generic
deploy-form ONNX → convert_model → NNCF with our policy), three ways to compile:

- default: OpenVINO's defaults (bf16 float layers on such CPUs);
- ACCURACY: `EXECUTION_MODE_HINT=ACCURACY`, what rmt-deploy records in every IR and its runners use;
- marked: defaults, but every layer other than the quantized ones marked to keep its precision
  (rt_info `precise_0`, written by `save_model` as the IR's `precise` attribute; the CPU plugin's
  bf16 pass skips marked layers — those it does not replace with its own fused nodes).

Accuracy: worst per-image logit cosine and top-1 agreement against PyTorch FP32 on --images
bundled validation images (`--arch rmt-demo` uses the trained demo checkpoint; other variants get
random weights, which say little about accuracy). Speed: median latency, interleaved (A B C … A B
C …), batch 1, latency hint; ratios to the ACCURACY run of the same IR. Prints the precision each
run really used. Read ratios, not absolute times.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import bench_args, interleaved_medians, random_input

from rmt_deploy.bench.parity import compare_logits
from rmt_deploy.bundled import bundled_images, bundled_weights
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.quant.calibrate import quantize_openvino
from rmt_deploy.quant.policy import OPENVINO_QUANTIZED_OPS, QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.sizes import parse_img_size
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import openvino as ov_target

_KEEP_AS_IS = {*OPENVINO_QUANTIZED_OPS, "FakeQuantize", "Constant", "Convert", "Parameter", "Result"}


def _extra(ap) -> None:
    ap.add_argument("--images", type=int, default=360, help="validation images for accuracy")


def _model(arch: str):
    from rmt_deploy.model.checkpoint import load_model
    from rmt_deploy.model.rmt import create_model

    if arch == "rmt-demo":
        return load_model(bundled_weights()).model.eval()
    torch.manual_seed(0)
    return create_model(arch).eval()


def _marked(model):
    """A copy whose float layers keep their precision under bf16 (the IR's ``precise`` mark)."""
    model = model.clone()
    for op in model.get_ops():
        if op.get_type_name() not in _KEEP_AS_IS:
            op.get_rt_info()["precise_0"] = ""
    return model


def main() -> None:
    args = bench_args(__doc__, calib=True, extra=_extra)
    if args.arch == "rmt-demo" and args.size == "224":
        args.size = "64"
    size, work = parse_img_size(args.size), Path(tempfile.mkdtemp(prefix="rmt-bench-ovprec-"))
    model = _model(args.arch)
    pre = Preprocess(size, crop_pct=1.0 if args.arch == "rmt-demo" else 0.875)  # the demo's recorded preprocessing
    images, _, _ = load_batch(open_image_set(bundled_images("val")).subset(args.images), pre)
    calib, _, _ = load_batch(open_image_set(bundled_images("train")).subset(args.calib), pre)
    with torch.inference_mode():
        reference = model(torch.from_numpy(images)).numpy()

    onnx_path = onnx_target.export(to_deploy(model, size), work / "deploy.onnx", size, dynamic_batch=False, metadata={})
    float_model = ov_target.convert(onnx_path)
    int8 = quantize_openvino(ov_target.convert(onnx_path), calib, QuantPolicy())
    verified = {"compile_config": json.dumps(ov_target.VERIFIED_CONFIG)}
    runners = {}
    for precision, ir in (("fp16", float_model), ("int8", int8)):
        plain = ov_target.save(ir, work / f"{precision}.xml", {"precision": precision, **verified})
        marked = ov_target.save(_marked(ir), work / f"{precision}_marked.xml", {"precision": precision})
        runners[f"{precision} default"] = ov_target.OpenVINORunner(plain, args.threads, execution="default")
        runners[f"{precision} ACCURACY"] = ov_target.OpenVINORunner(plain, args.threads)
        runners[f"{precision} marked"] = ov_target.OpenVINORunner(marked, args.threads, execution="default")

    print(f"{args.arch} ({'trained demo weights' if args.arch == 'rmt-demo' else 'random weights'}), batch 1, "
          f"{size[0]}x{size[1]}, {args.threads} threads; accuracy on {len(images)} images vs PyTorch FP32")
    print(f"{'IR and compile setting':22s} {'worst cos':>9s} {'agree':>7s}  ran as")
    for name, runner in runners.items():
        runner.activate()
        logits = np.concatenate([runner.infer({"input": images[i:i + 1]})["logits"] for i in range(len(images))])
        scores, run = compare_logits(reference, logits), runner.execution()
        layers = ", ".join(f"{k} {v}" for k, v in sorted(run["layers_by_precision"].items(), key=lambda kv: -kv[1]))
        print(f"{name:22s} {scores['cosine']:9.5f} {100 * scores['top1_agreement']:6.1f}%  "
              f"{run['inference_precision']}; {layers}")
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)
    print(f"\nmedian of {args.rounds} interleaved runs; time / the same IR's ACCURACY time")
    for name, m in medians.items():
        base = medians[f"{name.split()[0]} ACCURACY"]
        print(f"{name:22s} {m:8.2f} ms  {m / base:5.2f}")


if __name__ == "__main__":
    main()
