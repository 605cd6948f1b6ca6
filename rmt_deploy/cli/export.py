"""`rmt-deploy export`: flags (and a preset) → ExportOptions → the export job → a summary."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..targets import DEFAULT_TARGETS, TARGETS
from ..targets.coreml_settings import CoreMLSettings
from ..targets.executorch import ExecuTorchOptions
from ..targets.tensorrt import TensorRTOptions
from .app import ArchOpt, ImgSizeOpt, JsonOpt, OutOpt, Output, QuietOpt, TargetOpt, WeightsOpt, app, errors_to_exit

EXAMPLES = """
[b]Examples[/b]

  rmt-deploy export --target onnx                      [dim]# bundled demo model + images, offline[/dim]
  rmt-deploy export -w rmt_s.pth --target onnx         [dim]# official checkpoint, arch detected[/dim]
  rmt-deploy export -w ckpt.pth --arch rmt-t --img-size 256x320 --dynamic-batch --out out/
  rmt-deploy export --int8 --fp16                      [dim]# FP32 + INT8 + FP16, one report[/dim]
  rmt-deploy export -w ckpt.pth --int8 --calib /data/calib --eval /data/val --max-drop 0.5
  rmt-deploy export --target onnxruntime --int8        [dim]# model*.ort.onnx: ONNX Runtime >= 1.23 only[/dim]
  rmt-deploy export --target openvino --int8           [dim]# OpenVINO IR, NNCF INT8[/dim]
  rmt-deploy export --target executorch --int8         [dim]# .pte for Android/embedded (XNNPACK), PT2E INT8[/dim]
  rmt-deploy export --target litert --int8             [dim]# .tflite for Android's LiteRT (XNNPACK), PT2E INT8[/dim]
  rmt-deploy export --target mnn --fp16 --int8         [dim]# .mnn for MNN (Android/iOS/Linux), its own INT8[/dim]
  rmt-deploy export --preset jetson-orin-int8          [dim]# a shipped recipe (rmt-deploy presets)[/dim]
  rmt-deploy export --task backbone -w maskrcnn_rmt_t_1x.pth --img-size 800x1344 --target onnx,trt --int8 --calib /data/calib
"""

VERIFY, INT8 = "Verification", "INT8 calibration"


def _int8_help() -> str:
    """--int8's help from the target table: who calibrates each target's INT8 on real images."""
    by = {}
    for t in TARGETS.values():
        if "int8" in t.precisions:
            by.setdefault(t.calibrator_title if t.calibrated_int8 else "INT8 weights only", []).append(t.title)
    return ("Write an INT8 model, post-training, calibrated on real images (--calib): "
            + "; ".join(f"{', '.join(titles)}: {how}" for how, titles in by.items()) + ".")


def _panel(options_type) -> str:
    """The help panel of a target's own flags, named after the target whose options they are."""
    return next(f"{t.title} options" for t in TARGETS.values() if t.options_type is options_type)


COREML, TENSORRT, EXECUTORCH = (_panel(o) for o in (CoreMLSettings, TensorRTOptions, ExecuTorchOptions))
# CLI parameter → ExportOptions / target options field where the names differ (presets merge by field).
_FIELD_OF = {"target": "targets", "out_dir": "out", "license_text": "license"}


@app.command(epilog=EXAMPLES)
def export(
    ctx: typer.Context,
    preset: Annotated[Optional[str], typer.Option(
        "--preset", help="A deployment recipe: a shipped preset name (see `rmt-deploy presets`) or a .toml file. "
                         "Flags given here override it.", show_default=False)] = None,
    weights: WeightsOpt = None,
    arch: ArchOpt = None,
    img_size: ImgSizeOpt = None,
    task: Annotated[str, typer.Option("--task", help="classify: logits. backbone: the feature maps a detector or "
                                                     "segmenter takes (strides 4/8/16/32), from a det/seg or "
                                                     "classification checkpoint.")] = "classify",
    out_indices: Annotated[Optional[str], typer.Option(
        "--out-indices", help="With --task backbone: stages to output, e.g. 1,2,3 (default 0,1,2,3).",
        show_default=False)] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--no-dynamic-batch", help="Batch axis dynamic ("
                                                 + ", ".join(t.title for t in TARGETS.values() if t.dynamic_batch)
                                                 + "; the others take batch 1).")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic/--no-dynamic", help="One artifact for many input sizes: batch, "
                                          "height and width dynamic (ONNX, ONNX Runtime, OpenVINO, TensorRT; Core ML: enumerated "
                                          "sizes). --img-size is the "
                                          "size it is calibrated and timed at; it is also verified at the range's "
                                          "ends.")] = False,
    min_size: Annotated[Optional[int], typer.Option(
        "--min-size", help="With --dynamic: the smallest height and width (multiple of 32; default half the "
                           "short side of --img-size).", show_default=False)] = None,
    max_size: Annotated[Optional[int], typer.Option(
        "--max-size", help="With --dynamic: the largest height and width (multiple of 32; default twice the "
                           "long side of --img-size).", show_default=False)] = None,
    resize: Annotated[Optional[str], typer.Option(
        "--resize", help="With --task backbone: letterbox (default: fit into --img-size, pad bottom/right) or mmdet "
                         "(with --dynamic: mmdet's test resize, each image at its own size padded to a multiple "
                         "of 32; recorded in the artifact).", show_default=False)] = None,
    resize_scale: Annotated[Optional[str], typer.Option(
        "--resize-scale", help="With --resize mmdet: the long and short edge limits, LONGxSHORT (default 1333x800).",
        show_default=False)] = None,
    target: TargetOpt = list(DEFAULT_TARGETS),  # noqa: B006 — typer reads the default
    out_dir: OutOpt = Path("rmt-deploy-out"),
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help=_int8_help())] = False,
    fp16: Annotated[bool, typer.Option("--fp16/--no-fp16", help="Write an FP16 model (ONNX: FP32 inputs/outputs).")] = False,
    fp32: Annotated[bool, typer.Option("--fp32/--no-fp32", help="Write an FP32 model (ONNX always does; Core ML's "
                                                      "default is FP16).")] = False,
    eval_dir: Annotated[Optional[Path], typer.Option(
        "--eval", help="ImageFolder (accuracy + parity), flat folder or .txt list (parity only). "
                       "Default: bundled calib/val.", show_default=False, rich_help_panel=VERIFY)] = None,
    label_map: Annotated[Optional[Path], typer.Option("--label-map", help="JSON: class folder name → class "
                                                      "name, recorded in the report and ONNX metadata.",
                                                      show_default=False, rich_help_panel=VERIFY)] = None,
    parity_samples: Annotated[int, typer.Option("--parity-samples", help="Images for the parity check.",
                                                rich_help_panel=VERIFY)] = 16,
    atol: Annotated[float, typer.Option("--atol", help="Max abs logit difference allowed vs PyTorch (FP32).",
                                        rich_help_panel=VERIFY)] = 1e-4,
    bench_iters: Annotated[int, typer.Option("--bench-iters", help="Timed runs for latency (0: skip).",
                                             rich_help_panel=VERIFY)] = 30,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Runtime threads. Default: all cores.",
                                                   show_default=False, rich_help_panel=VERIFY)] = None,
    strict: Annotated[bool, typer.Option("--strict/--no-strict", help="Stop at the first target that fails instead of "
                                                         "recording it in the report.")] = False,
    calib: Annotated[Optional[str], typer.Option(
        "--calib", help="INT8 calibration images: ImageFolder, flat folder or .txt list; a few hundred like those "
                        "the model will see. Needed with your own checkpoint (-w); 'demo': the bundled digits, on "
                        "purpose. Default for the demo model: the bundled digits.", show_default=False,
        rich_help_panel=INT8)] = None,
    calib_size: Annotated[int, typer.Option("--calib-size", help="Calibration images (an evenly spread, "
                                                                 "deterministic subset).", rich_help_panel=INT8)] = 256,
    max_drop: Annotated[Optional[float], typer.Option(
        "--max-drop", help="INT8 top-1 budget in points vs FP32; over it, the most sensitive layers go back "
                           "to float until it fits (needs a labelled --eval).", show_default=False,
        rich_help_panel=INT8)] = None,
    min_cosine: Annotated[Optional[float], typer.Option(
        "--min-cosine", help="INT8 budget without labels: the worst per-image cosine vs FP32 of every output "
                             "(each feature map of a backbone, or the logits); below it, the most sensitive layers "
                             "go back to float until it holds.", show_default=False, rich_help_panel=INT8)] = None,
    statistic: Annotated[str, typer.Option("--statistic", help="Activation range estimator: minmax, "
                                                               "mean-minmax, quantile, histogram.",
                                           rich_help_panel=INT8)] = "minmax",
    image_input: Annotated[bool, typer.Option(
        "--image-input/--no-image-input", help="Take an RGB image (camera frames, Vision) with the normalisation "
                                               "built in, instead of a normalised float tensor.",
        rich_help_panel=COREML)] = False,
    min_target: Annotated[str, typer.Option("--min-target", help="Oldest OS to run on, e.g. iOS16, iOS17, macOS14.",
                                            rich_help_panel=COREML)] = "iOS16",
    w8a8: Annotated[bool, typer.Option("--w8a8/--no-w8a8", help="With --int8: INT8 activations too (iOS17+, "
                                                      "calibrated with Core ML predict: macOS only).",
                                       rich_help_panel=COREML)] = False,
    license_text: Annotated[str, typer.Option("--license", help="Licence text stored in the package.",
                                              show_default=False, rich_help_panel=COREML)] = "",
    require_engine: Annotated[bool, typer.Option(
        "--require-engine/--no-require-engine", help="Fail (exit 2) when no engine can be built here instead of "
                                                     "writing the TensorRT-ready ONNX and build_engine.sh only.",
        rich_help_panel=TENSORRT)] = False,
    delegate: Annotated[str, typer.Option(
        "--delegate", help="Backend the program is lowered to: xnnpack (Arm and x86 CPUs; run and verified here), "
                           "vulkan (Android GPUs) or coreml (Apple); the last two are written, not run here.",
        rich_help_panel=EXECUTORCH)] = "xnnpack",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a checkpoint to deploy-ready artifacts, verify them on real images, write a report.

    ONNX always writes FP32 (the baseline); --int8 and --fp16 add artifacts to the same report.
    Other targets write the precisions asked for, or their default (Core ML: FP16)."""
    with errors_to_exit():
        from ..jobs.export import run_export
        from ..jobs.plan import options_from_flags

        flags = dict(
            weights=weights, arch=arch, img_size=img_size, task=task, out_indices=out_indices,
            dynamic_batch=dynamic_batch, dynamic=dynamic, min_size=min_size, max_size=max_size, resize=resize,
            resize_scale=resize_scale, targets=target,
            out=out_dir,
            eval_dir=eval_dir, label_map=label_map, parity_samples=parity_samples, atol=atol, bench_iters=bench_iters,
            threads=threads, strict=strict, int8=int8, fp16=fp16, fp32=fp32, calib=calib, calib_size=calib_size,
            max_drop=max_drop, min_cosine=min_cosine, statistic=statistic, image_input=image_input, min_target=min_target, w8a8=w8a8,
            license=license_text, require_engine=require_engine, delegate=delegate)
        # Flags the user typed (by the source's name: typer's enum class is not public API).
        given = {_FIELD_OF.get(name, name) for name in ctx.params
                 if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT")}
        opts = options_from_flags(flags, preset, given)
        output = Output(as_json, quiet)
        report = run_export(opts, output.progress)
        output.result(report, lambda console: _summary(console, report),
                      f"report: {out_dir / 'report.md'}  ({out_dir / 'report.json'})")


def _summary(console: Console, report: dict) -> None:
    """One row per artifact in 80 columns (CI logs), every value whole; why an artifact failed or was
    skipped goes on its own line below the table."""
    table = Table(title=f"{report['model']['variant']} @ {'x'.join(map(str, report['model']['input_size']))}",
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for col in ("target", "prec.", "status", "MB", "max abs", "cosine", "top-1", "agree", "p50 ms"):
        table.add_column(col, justify="left" if col in ("target", "prec.", "status") else "right", overflow="fold")
    reasons = []
    for a in report["artifacts"]:
        acc, lat, par = a.get("accuracy") or {}, a.get("latency_ms") or {}, a.get("parity") or {}
        table.add_row(a["target"], a["precision"], a["status"],
                      f"{a['size_bytes'] / 1e6:.1f}" if a.get("size_bytes") else "—",
                      f"{par['max_abs']:.1e}" if par else "—",
                      f"{par['cosine']:.5f}" if par else "—",
                      f"{acc['top1']:.2f}" if acc else "—",
                      f"{acc['agreement'] * 100:.1f}%" if acc else "—",
                      f"{lat['p50']:.2f}" if lat else "—")
        if a.get("reason") and a["status"] != "ok":
            reasons.append(f"{a['target']} {a['precision']} {a['status']}: {a['reason']}")
    console.print(table)
    for line in reasons:
        console.print(escape(line), highlight=False)  # wrapped at the width, never cut
