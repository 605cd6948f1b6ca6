"""INT8 of a dynamic-size demo at every verified size: calibrated at the verified size only, or at
every verified size (the calibration images shared among them round robin).

    python benches/bench_int8_sizes.py [--min-size 32] [--max-size 128] [--size 64] [--calib 256]

One process: exports the bundled demo's dynamic deploy form, calibrates it with NNCF each way (ONNX
Runtime encoding with 7-bit weights, TensorRT's Q/DQ with 8-bit weights, OpenVINO), runs each on
the 16 first bundled validation images at every verified size, and prints the worst image cosine
of the logits against PyTorch FP32 there. OpenVINO runs with f32 inference precision, as verified.
Accuracy only: nothing is timed.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from rmt_deploy.bundled import bundled_images, bundled_weights
from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.model.checkpoint import load_model
from rmt_deploy.quant.calibrate import quantize_openvino
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.sizes import SizeRange
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets.onnx_export import export_for_calibration
from rmt_deploy.targets.openvino import convert


def _worst_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(((ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-size", type=int, default=32)
    parser.add_argument("--max-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--calib", type=int, default=256)
    args = parser.parse_args()
    model = load_model(bundled_weights()).model.eval()
    size, size_range = (args.size, args.size), SizeRange(args.min_size, args.max_size)
    sizes = size_range.verified_sizes(size)
    train = open_image_set(bundled_images("train")).subset(args.calib)
    val = open_image_set(bundled_images("val")).subset(16)
    at = {s: load_batch(train, Preprocess(s))[0] for s in sizes}
    val_at = {s: load_batch(val, Preprocess(s))[0] for s in sizes}
    with torch.no_grad():
        reference = {s: model(torch.from_numpy(x)).numpy() for s, x in val_at.items()}
    calibrations = {f"at {size[0]}x{size[1]}": at[size],
                    "at every verified size": [at[sizes[i % len(sizes)]][i] for i in range(len(train))]}

    def ort_row(graph) -> list[float]:
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return [_worst_cosine(reference[s], np.concatenate([session.run(None, {name: x[i:i + 1]})[0]
                                                           for i in range(len(x))])) for s, x in val_at.items()]

    def openvino_row(ov_model) -> list[float]:
        import openvino as ov

        compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return [_worst_cosine(reference[s], np.concatenate([compiled(x[i:i + 1])[0] for i in range(len(x))]))
                for s, x in val_at.items()]

    rows = {}
    for weights, encoding in (("portable", "onnxruntime"), ("full", "generic")):
        graph = export_for_calibration(model, size, dynamic_batch=False, encoding=encoding, size_range=size_range)
        for how, samples in calibrations.items():
            int8 = calibrate_int8(graph, samples, QuantPolicy(weight_range=weights))
            kind = "onnxruntime" if encoding == "onnxruntime" else "qdq"
            rows[f"{'ONNX Runtime encoding' if kind == 'onnxruntime' else 'TensorRT Q/DQ'}, calibrated {how}"] = \
                ort_row(getattr(int8, kind))
    with tempfile.TemporaryDirectory() as work:
        deploy = to_deploy(model, size, encoding="generic", dynamic=True, largest=size_range.largest)
        float_model = convert(onnx_target.export(deploy, Path(work) / "model.onnx", size, dynamic_batch=False,
                                                 metadata={}, size_range=size_range))
        for how, samples in calibrations.items():
            rows[f"OpenVINO, calibrated {how}"] = openvino_row(quantize_openvino(float_model.clone(), samples,
                                                                                  QuantPolicy()))
    print(f"rmt-demo, dynamic {size_range}, verified at {', '.join(f'{h}x{w}' for h, w in sizes)}; "
          f"{len(train)} calibration images; worst cosine vs PyTorch FP32 on 16 images")
    print(f"{'':58s}" + "".join(f"{f'{h}x{w}':>10s}" for h, w in sizes))
    for name, values in rows.items():
        print(f"{name:58s}" + "".join(f"{v:10.4f}" for v in values))


if __name__ == "__main__":
    main()
