"""Make the pictures in docs/images/ from the demo, the way a user's first run makes them.

    python tools/make_doc_images.py            # about two minutes on 2 cores

report-plot.png        plot.png of `rmt-deploy export --target onnx --int8` (Getting started)
report-plot-bench.png  the same report after `rmt-deploy bench --batch 1,4,8` (Benchmarks)
compare-plot.png       compare.png of the FP16 and INT8 ONNX (Finding accuracy loss)
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import rmt_deploy as rd

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        report = rd.export(targets=["onnx"], int8=True, out=out, progress=True)
        shutil.copy(out / "plot.png", IMAGES / "report-plot.png")

        rd.export(targets=["onnx"], int8=True, fp16=True, dynamic_batch=True, out=out, progress=True)
        rd.bench(from_dir=out, batch=[1, 4, 8], iters=20)  # updates the export's report and plot
        shutil.copy(out / "plot.png", IMAGES / "report-plot-bench.png")

        rd.compare([out / "model_fp16.onnx", out / "model_int8.onnx"], out=Path(tmp) / "compare")
        shutil.copy(Path(tmp) / "compare" / "compare.png", IMAGES / "compare-plot.png")
    print(f"wrote {', '.join(p.name for p in sorted(IMAGES.glob('*.png')))} to {IMAGES} ({report.model['variant']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
