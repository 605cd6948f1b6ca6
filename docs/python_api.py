"""rmt-deploy from Python: export, run the artifact on images, benchmark, gate — a CI step.

Run from a source checkout (it uses the bundled demo checkpoint and images unless told otherwise):

    python docs/python_api.py [--weights ckpt.pth] [--out example-out] [--max-drop 0.5]

Exits 1 when an artifact fails its checks or the gate fails, 0 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rmt_deploy as rd
from rmt_deploy.bundled import bundled_images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="checkpoint (default: the bundled demo)")
    parser.add_argument("--out", default="example-out")
    parser.add_argument("--max-drop", type=float, default=0.5)
    args = parser.parse_args()

    try:  # FP32 + INT8 ONNX, verified against PyTorch on the bundled images
        report = rd.export(args.weights, targets=["onnx"], int8=True, out=args.out, calib_size=32,
                           bench_iters=10, progress=True)
    except rd.VerificationError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    for a in report.artifacts:
        print(f"{a.target}/{a.precision}: {a.status}, worst cosine {a.parity.cosine:.6f}, "
              f"p50 {a.latency.p50:.2f} ms" if a.ok else f"{a.target}/{a.precision}: {a.status} ({a.reason})")

    # The INT8 model on a few images, preprocessed as its metadata says.
    images = sorted(bundled_images("val").rglob("*.png"))[::25]
    with rd.load(report.artifact("onnx", "int8").path) as model:  # report paths load from any directory
        for p in model.predict(images, topk=3):
            print(f"{Path(p.source).parent.name}/{Path(p.source).name}: {p.names[0]} ({p.probabilities[0]:.3f})")

    timings = rd.bench([a.path for a in report.artifacts if a.ok], batch=[1], iters=20,
                       out=Path(args.out) / "bench", reference=False)
    for a in timings.artifacts:
        print(f"bench {a.precision}: p50 {a.latency.p50:.2f} ms")

    gate = rd.check(report.report_path, max_drop=args.max_drop)
    for r in gate.failed:
        print(f"gate: {r.artifact} {r.check}: {r.reason}", file=sys.stderr)
    return 0 if gate.passed else 1


if __name__ == "__main__":
    sys.exit(main())
