"""Deploy-form ONNX vs the reference exported as-is, ONNX Runtime FP32 on CPU.

    python benches/bench_deploy_vs_reference.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 30]

Measures in one process, interleaved (A B C A B C …), the median of --rounds runs each:
  (a) our deploy-form ONNX in the ONNX Runtime encoding (fused Attention and RotaryEmbedding,
      `rmt-deploy export --target onnxruntime`: model.ort.onnx), and (a') the generic encoding
      (plain MatMul/Softmax: the standard model.onnx of `--target onnx`, also what TensorRT and
      OpenVINO get),
  (b) the reference model exported directly with torch.onnx.export (torch's default
      exporter, dynamo), and (b') with the legacy TorchScript exporter;
  then PyTorch eager on the reference for context (separately: its OpenMP threads spin
  after each call and would slow the next session). Prints node counts and the ratios
b/a and b'/a (target ≥ 1.6). Both ONNX Runtime sessions run with
session.force_spinning_stop=1 so an idle session's threads do not steal a core.
Absolute times are noisy on shared machines; read the ratios.
"""
from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from common import bench_setup, export_deploy_fp32, interleaved_medians

from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets.onnx_export import _quiet_exporter


def export_reference(model: torch.nn.Module, path: Path, x: torch.Tensor, dynamo: bool) -> None:
    with _quiet_exporter(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo, opset_version=18,
                          input_names=["input"], output_names=["logits"],
                          **({"external_data": False} if dynamo else {}))


def main() -> None:
    bench = bench_setup(__doc__, "reference", rounds=30)
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    x = torch.randn(1, 3, *size)
    paths = {
        "deploy": work / "deploy.onnx",
        "deploy (generic ops)": work / "deploy_generic.onnx",
        "reference (dynamo)": work / "ref_dynamo.onnx",
        "reference (torchscript)": work / "ref_ts.onnx",
    }
    print(f"exporting {args.arch} at {size[0]}x{size[1]} into {work} …", flush=True)
    export_deploy_fp32(bench, paths["deploy"], encoding="onnxruntime")
    export_deploy_fp32(bench, paths["deploy (generic ops)"], encoding="generic")
    export_reference(model, paths["reference (dynamo)"], x, dynamo=True)
    export_reference(model, paths["reference (torchscript)"], x, dynamo=False)

    runners = {name: onnx_target.TARGET.load(p, threads=args.threads) for name, p in paths.items()}
    for r in runners.values():
        r.activate()
    feeds = {"input": x.numpy()}
    reference_logits = model(x).detach().numpy()
    for name, r in runners.items():
        diff = np.abs(r.infer(feeds)["logits"] - reference_logits).max()
        print(f"  {name:26s} max |logits - PyTorch| = {diff:.2e}")

    median = interleaved_medians(runners, x.numpy(), args.warmup, args.rounds)
    for r in runners.values():
        r.deactivate()
    # PyTorch eager runs after, not interleaved: its OpenMP threads keep spinning after each
    # call and would slow whichever session runs next.
    torch.set_num_threads(args.threads)
    eager = []
    with torch.inference_mode():
        for i in range(args.warmup + args.rounds):
            start = time.perf_counter()
            model(x)
            if i >= args.warmup:
                eager.append(time.perf_counter() - start)
    median["pytorch eager (reference)"] = statistics.median(eager) * 1000

    print(f"\n{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, "
          f"median of {args.rounds} interleaved runs (ONNX Runtime CPU, FP32)")
    print(f"{'variant':28s} {'nodes':>6s} {'p50 ms':>8s}")
    for name in median:
        nodes = len(onnx.load(str(paths[name])).graph.node) if name in paths else "-"
        print(f"{name:28s} {nodes!s:>6s} {median[name]:8.2f}")
    a = median["deploy"]
    print(f"\nratio reference(dynamo)/deploy      = {median['reference (dynamo)'] / a:.2f}   (target >= 1.6)")
    print(f"ratio deploy(generic)/deploy        = {median['deploy (generic ops)'] / a:.2f}")
    print(f"ratio reference(torchscript)/deploy = {median['reference (torchscript)'] / a:.2f}")
    print(f"ratio pytorch-eager/deploy          = {median['pytorch eager (reference)'] / a:.2f}")


if __name__ == "__main__":
    main()
