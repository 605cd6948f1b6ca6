"""Backbone memory at detection sizes: the attention in chunks (rewrite.chunks) against the unchunked form.

    python benches/bench_memory.py [--arch rmt-t] [--size 800x1344] [--threads 2] [--rounds 20]
    python benches/bench_memory.py --size 1024x2048 --rounds 20 --no-unchunked

One process exports the RMT backbone (random weights, out_indices 0-3, batch 1) as FP32 ONNX:
  ort whole     the ONNX Runtime encoding (model.ort.onnx) with no attention chunks (the form before #37);
  ort chunks    the same with the default chunk budget (64 MB of scores per image);
  onnx chunks   the standard encoding (model.onnx) in chunks, on ONNX Runtime, and as the openvino target's
                FP32 IR on OpenVINO (compiled at f32).
For each file it prints the export time, the chunk plan, the largest initializer, and the peak resident
memory of a fresh process that loads it and runs one image (bench.peak_memory: what a device needs free);
then the median of --rounds interleaved runs (A B C … A B C …) and the ratios. Read the ratios: absolute
times on shared machines are noisy.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from common import bench_args, interleaved_medians, random_input

from rmt_deploy.bench import peak_memory
from rmt_deploy.model.backbone import create_backbone
from rmt_deploy.rewrite import CHUNK_BYTES, chunk_plan, to_deploy
from rmt_deploy.sizes import parse_img_size
from rmt_deploy.targets import TARGETS
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import openvino

UNCHUNKED = 1 << 60


def _extra(ap) -> None:
    ap.add_argument("--no-unchunked", action="store_true", help="skip the unchunked form (too big at 1024x2048)")


def main() -> None:
    import tempfile

    args = bench_args(__doc__, rounds=20, extra=_extra)
    size = parse_img_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="rmt-bench-memory-"))
    torch.manual_seed(0)
    model = create_backbone(args.arch).eval()
    forms = {"ort chunks": ("onnxruntime", CHUNK_BYTES), "onnx chunks": ("generic", CHUNK_BYTES)}
    if not args.no_unchunked:
        forms = {"ort whole": ("onnxruntime", UNCHUNKED), **forms}
    print(f"{args.arch} backbone at {size[0]}x{size[1]} into {work} …", flush=True)
    paths = {}
    for name, (encoding, budget) in forms.items():
        start = time.perf_counter()
        deploy = to_deploy(model, size, encoding=encoding, chunk_bytes=budget)
        paths[name] = onnx_target.export(deploy, work / f"{name.replace(' ', '_')}.onnx", size, dynamic_batch=False,
                                         metadata={})
        print(f"  {name:12s} export {time.perf_counter() - start:6.1f} s, chunks {chunk_plan(deploy):14s} "
              f"file {paths[name].stat().st_size / 1e6:6.1f} MB", flush=True)

    print(f"\nOne image in a fresh process ({args.threads} threads): peak resident memory, MiB")
    print(f"  {'file':12s} {'runtime':12s} {'after load':>10s} {'after run':>10s}")
    ir = openvino.save(openvino.convert(paths["onnx chunks"]), work / "onnx_chunks.xml", {"precision": "fp32"})
    runs = [(name, "onnxruntime" if forms[name][0] == "onnxruntime" else "onnx", paths[name]) for name in paths]
    runs.append(("onnx chunks", "openvino", ir))  # the openvino target's FP32 IR, compiled at f32
    memory = {}
    for name, runtime, path in runs:
        m = peak_memory.measure(runtime, path, size, args.threads)
        memory[(name, runtime)] = m
        if m and "peak_mb" in m:
            print(f"  {name:12s} {runtime:12s} {m['load_mb']:10.0f} {m['peak_mb']:10.0f}", flush=True)
        else:
            print(f"  {name:12s} {runtime:12s} failed: {m}", flush=True)

    x = random_input(size)
    runners = {name: onnx_target.TARGET.load(p, threads=args.threads) for name, p in paths.items()}
    runners["onnx chunks on openvino"] = TARGETS["openvino"].load(ir, args.threads)
    for r in runners.values():
        r.activate()
        r.infer({r.input_names()[0]: x})
    median = interleaved_medians(runners, x, args.warmup, args.rounds)
    for r in runners.values():
        r.deactivate()
    print(f"\n{args.arch} backbone, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          "interleaved runs")
    for name, ms in median.items():
        print(f"  {name:24s} {ms:9.1f} ms")
    if "ort whole" in median:
        print(f"\nratio ort whole / ort chunks (time)   = {median['ort whole'] / median['ort chunks']:.2f}")
        whole, chunked = memory[("ort whole", "onnxruntime")], memory[("ort chunks", "onnxruntime")]
        if whole and chunked and "peak_mb" in whole and "peak_mb" in chunked:
            print(f"ratio ort whole / ort chunks (memory) = {whole['peak_mb'] / chunked['peak_mb']:.2f}")
    print(f"ratio onnx chunks ORT / OpenVINO       = {median['onnx chunks'] / median['onnx chunks on openvino']:.2f}")


if __name__ == "__main__":
    main()
