"""Detection/segmentation backbone: our deploy form (FP32, INT8) vs the reference exported as-is.

    python benches/bench_backbone.py [--arch rmt-t] [--size 512] [--threads 2] [--rounds 20] [--calib 32]
    python benches/bench_backbone.py --size 800x1344 --rounds 20

One process, RMT backbone (random weights: speed ignores them; out_indices 0-3) at batch 1:
  (a) our FP32 deploy form (`rmt-deploy export --task backbone`), (b) its ONNX Runtime INT8
  (7-bit weights, calibrated with NNCF on --calib bundled images, letterbox preprocessing), and
  (r) the reference backbone exported directly with torch.onnx.export (dynamo, opset 18, onnxslim
  not applied: what a user gets without rmt-deploy).
Prints each file's size and export peak memory, the worst feature max-abs vs PyTorch, the median
of --rounds interleaved runs (A B R A B R …) and the ratios r/a and a/b. Read the ratios: absolute
times on shared machines are noisy.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from common import bench_setup, interleaved_medians, random_input

from rmt_deploy.bench.memory import peak_rss_bytes
from rmt_deploy.bundled import bundled_images
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets.onnx import _quiet_exporter, export_for_calibration

NAMES = ["feat0", "feat1", "feat2", "feat3"]


def main() -> None:
    bench = bench_setup(__doc__, "backbone", rounds=20, calib=True)
    args, size, work = bench.args, bench.size, bench.work
    torch.manual_seed(0)
    model = create_backbone(args.arch).eval()
    x = random_input(size)
    paths = {"deploy fp32": work / "deploy.onnx", "deploy int8": work / "deploy_int8.onnx",
             "reference fp32": work / "reference.onnx"}
    print(f"{args.arch} backbone at {size[0]}x{size[1]} into {work} …", flush=True)
    start = time.perf_counter()
    onnx_target.export(to_deploy(model, size, encoding="onnxruntime"), paths["deploy fp32"], size, dynamic_batch=False,
                       metadata={})
    print(f"  deploy export {time.perf_counter() - start:.1f} s, peak RSS so far {peak_rss_bytes() / 2**30:.2f} GiB")
    pre = Preprocess(size, crop_pct=1.0, interpolation="bilinear", resize="letterbox")
    samples, _, _ = load_batch(open_image_set(bundled_images("train")).subset(args.calib), pre)
    start = time.perf_counter()
    int8 = calibrate_int8(export_for_calibration(model, size, dynamic_batch=False, encoding="onnxruntime"), samples,
                          QuantPolicy())
    onnx_target.save(int8.onnxruntime, paths["deploy int8"], {})
    print(f"  INT8 calibration on {len(samples)} images {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    with _quiet_exporter(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(paths["reference fp32"]), dynamo=True, opset_version=18,
                          input_names=["input"], output_names=NAMES, external_data=False)
    print(f"  reference export {time.perf_counter() - start:.1f} s, peak RSS so far {peak_rss_bytes() / 2**30:.2f} GiB")

    runners = {name: onnx_target.TARGET.load(p, threads=args.threads) for name, p in paths.items()}
    with torch.inference_mode():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    for name, r in runners.items():
        r.activate()
        out = r.infer({"input": x})
        worst = max(float(np.abs(out[n] - f).max()) for n, f in zip(NAMES, ref))
        print(f"  {name:16s} {p_size(paths[name]):>9s}  worst feature max |diff| vs PyTorch {worst:.2e}")
    median = interleaved_medians(runners, x, args.warmup, args.rounds)
    for r in runners.values():
        r.deactivate()
    print(f"\n{args.arch} backbone, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          "interleaved runs (ONNX Runtime CPU)")
    for name, ms in median.items():
        print(f"  {name:16s} {ms:9.1f} ms")
    print(f"\nratio reference/deploy fp32 = {median['reference fp32'] / median['deploy fp32']:.2f}")
    print(f"ratio deploy fp32/int8      = {median['deploy fp32'] / median['deploy int8']:.2f}")
    print(f"peak RSS of this process    = {peak_rss_bytes() / 2**30:.2f} GiB")


def p_size(path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


if __name__ == "__main__":
    main()
