"""INT8 weight grids per runtime and CPU code path: full 8-bit vs portable 7-bit weights.

    python benches/bench_int8_portability.py [--arch rmt-t] [--size 224] [--calib 64] [--images 32]
                                             [--qemu-images 8] [--qemu-arch-images 0] [--threads 2] [--rounds 40]

For the bundled demo and for --arch (random weights with randomised norms, as in the tests, on
real bundled images) it calibrates both grids with NNCF for both backends, then prints the worst
and mean logit cosine and the top-1 agreement vs PyTorch FP32 of:
- the ONNX Runtime encoding, natively, and under qemu's Haswell model (AVX2, no VNNI: ONNX
  Runtime picks its AVX2 int8 kernels; emulated, so slow: --qemu-images demo images,
  --qemu-arch-images for --arch, about 3 min per RMT-T 224² image; 0 skips it);
- the OpenVINO IR natively (FP32 and the device default, bf16 on AVX512-BF16/AMX CPUs) and with
  oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``: the int8 kernels of an AVX2-only CPU).
Then it times full vs portable interleaved in one process (ratios; the grid should not matter).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from common import bench_setup, calibration_samples, interleaved_medians, random_input

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rmt_deploy.bundled import bundled_images, bundled_weights  # noqa: E402
from rmt_deploy.cpu import cpu_features, cpu_name  # noqa: E402
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set  # noqa: E402
from rmt_deploy.model.checkpoint import load_model  # noqa: E402
from rmt_deploy.quant.calibrate import quantize_openvino  # noqa: E402
from rmt_deploy.quant.checks import weight_grid  # noqa: E402
from rmt_deploy.quant.int8 import calibrate_int8  # noqa: E402
from rmt_deploy.quant.policy import QuantPolicy  # noqa: E402
from rmt_deploy.rewrite import to_deploy  # noqa: E402
from rmt_deploy.targets import onnx as onnx_target  # noqa: E402
from rmt_deploy.targets import openvino as ov_target  # noqa: E402
from tests.avx2 import onnxruntime_on_avx2, openvino_on_avx2, qemu_missing  # noqa: E402
from tests.conftest import randomize_  # noqa: E402

RANGES = ("full", "portable")


def _scores(out: np.ndarray, ref: np.ndarray) -> str:
    out = out.reshape(len(out), -1)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    return f"{cos.min():.4f} / {cos.mean():.4f} / {(out.argmax(1) == ref.argmax(1)).mean() * 100:5.1f}%"


def _native(path: Path, x: np.ndarray, config: dict | None = None) -> np.ndarray:
    if path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": 1, **(config or {})})
        return np.concatenate([model(x[i:i + 1])[0] for i in range(len(x))])
    with onnx_target.OnnxRuntimeRunner(path, 1) as runner:
        return np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])


def _measure(name: str, model, size, calib: np.ndarray, x: np.ndarray, work: Path, qemu_images: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    fp32 = onnx_target.export(to_deploy(model, size), work / "fp32.onnx", size, dynamic_batch=False, metadata={})
    graph = onnx_target.export_for_calibration(model, size, dynamic_batch=False, encoding="onnxruntime")
    paths = {}
    for weight_range in RANGES:
        policy = QuantPolicy(calib_size=len(calib), weight_range=weight_range)
        ort_model = calibrate_int8(copy.deepcopy(graph), calib, policy).onnxruntime
        paths["ort", weight_range] = work / f"ort_{weight_range}.onnx"
        onnx.save(ort_model, str(paths["ort", weight_range]))
        paths["ov", weight_range] = ov_target.save(quantize_openvino(ov_target.convert(fp32), calib, policy),
                                                   work / f"ov_{weight_range}.xml", {"precision": "int8"})
        grid = weight_grid(ort_model)
        print(f"{name} {weight_range:8s}: largest |int8 weight| {grid['max_abs']}, "
              f"{len(grid['saturating_layers'])} layers beyond the pair-safe 64")
    rows = []
    for weight_range in RANGES:
        ort_path, ov_path = paths["ort", weight_range], paths["ov", weight_range]
        rows += [(f"{weight_range:8s} onnxruntime native", _scores(_native(ort_path, x), ref)),
                 (f"{weight_range:8s} openvino native f32", _scores(_native(ov_path, x, {"INFERENCE_PRECISION_HINT": "f32"}), ref)),
                 (f"{weight_range:8s} openvino native default", _scores(_native(ov_path, x), ref)),
                 (f"{weight_range:8s} openvino AVX2 (oneDNN cap)",
                  _scores(openvino_on_avx2(ov_path, x, work / f"ov_avx2_{weight_range}"), ref))]
        if qemu_images and qemu_missing() is None:
            y = onnxruntime_on_avx2(ort_path, x[:qemu_images], work / f"ort_avx2_{weight_range}")
            rows.append((f"{weight_range:8s} onnxruntime AVX2 (qemu Haswell, {qemu_images} img)",
                         _scores(y, ref[:qemu_images])))
    print(f"\n{name}: worst cosine / mean cosine / top-1 agreement vs PyTorch FP32 on {len(x)} real images")
    for label, text in rows:
        print(f"  {label:52s} {text}")
    print()
    return paths


def main() -> None:
    bench = bench_setup(__doc__, "portability", calib=True, extra=lambda ap: (
        ap.add_argument("--images", type=int, default=32), ap.add_argument("--qemu-images", type=int, default=8),
        ap.add_argument("--qemu-arch-images", type=int, default=0)))
    args, size, work = bench.args, bench.size, bench.work
    features = cpu_features().to_dict()
    print(f"{cpu_name()}; {', '.join(features['isa'])}; int8 accumulation here: {features['int8_accumulation']}")
    if qemu_missing():
        print(f"ONNX Runtime AVX2 runs skipped: {qemu_missing()}")

    demo = load_model(bundled_weights(), None).model
    demo_size = (64, 64)
    images = open_image_set(bundled_images("val"))
    pre = Preprocess(demo_size)
    x_demo, _, _ = load_batch(images.subset(64), pre)
    _measure("demo", demo, demo_size, calibration_samples(256, demo_size), x_demo, work / "demo", args.qemu_images)

    model = randomize_(bench.model)
    x, _, _ = load_batch(images.subset(args.images), Preprocess(size))
    paths = _measure(args.arch, model, size, calibration_samples(args.calib, size), x, work / args.arch,
                     args.qemu_arch_images)

    runners = {f"{rt} {r}": (onnx_target.OnnxRuntimeRunner(paths[rt, r], args.threads) if rt == "ort"
                             else ov_target.OpenVINORunner(paths[rt, r], args.threads))
               for rt in ("ort", "ov") for r in RANGES}
    medians = interleaved_medians(runners, random_input(size), args.warmup, args.rounds)
    print(f"{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} interleaved runs")
    for label, ms in medians.items():
        print(f"  {label:14s} {ms:8.2f} ms")
    for rt, name in (("ort", "onnxruntime"), ("ov", "openvino")):
        print(f"  {name}: portable / full latency = {medians[f'{rt} portable'] / medians[f'{rt} full']:.3f}")


if __name__ == "__main__":
    main()
