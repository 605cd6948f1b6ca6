"""`rmt-deploy compare`: per-tap errors of artifacts against PyTorch, and where they start."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .app import JsonOpt, Output, QuietOpt, ThreadsOpt, WeightsOpt, app, errors_to_exit

EXAMPLES = """
[b]Examples[/b]

  rmt-deploy compare out/model_int8.onnx                     [dim]# weights and images from its metadata / the bundled set[/dim]
  rmt-deploy compare out/model_int8.xml -w ckpt.pth --images val/ --level block --json
  rmt-deploy compare out/model_fp16.mlpackage --level stage  [dim]# Core ML through the numpy evaluator off macOS[/dim]
  rmt-deploy compare out/model_int8.onnx --isolate           [dim]# INT8: each block's own contribution[/dim]
  rmt-deploy compare out/model_fp16.onnx out/model_int8.onnx [dim]# one line per artifact in compare.png[/dim]
"""


@app.command(epilog=EXAMPLES)
def compare(
    artifacts: Annotated[list[Path], typer.Argument(help="Exported models: .onnx, .xml (OpenVINO), .mlpackage.",
                                                    show_default=False)],
    weights: WeightsOpt = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder (or .txt list) of images. Default: the "
                                                   "bundled set.", show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Images to compare on.")] = 8,
    level: Annotated[str, typer.Option("--level", help="Taps: stage, block or op-group (norms, attention, FFN).")
                     ] = "block",
    isolate: Annotated[bool, typer.Option("--isolate", help="INT8 ONNX/OpenVINO: also run with only one tap's "
                                                            "layers quantized at a time (each one's own error).")] = False,
    worst: Annotated[int, typer.Option("--worst", help="How many of the worst taps to list.")] = 5,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for compare.json and compare.png. "
                                                "Default: beside the (first) artifact.", show_default=False)] = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Find the layer where an artifact stops matching PyTorch: errors at every module boundary."""
    with errors_to_exit():
        from ..jobs.compare import CompareOptions, run_compare

        output = Output(as_json, quiet)
        opts = CompareOptions(tuple(artifacts), weights=weights, images=images, samples=samples,
                              level=level.strip().lower(), isolate=isolate, worst=worst, out=out, threads=threads)
        results = run_compare(opts, output.progress)
        summary = "; ".join(f"{Path(r.path).name}: first divergence {r.first_divergence or 'none'}" for r in results)
        plot = results[0].plot if results else None
        output.result({"artifacts": [r.to_dict() for r in results]}, lambda console: _tables(console, results),
                      summary + (f" (plot: {plot})" if plot else ""))


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _tables(console: Console, results) -> None:
    for r in results:
        isolated = r.isolate is not None
        table = Table("tap", "cos worst", "max abs", "relL2 worst", "relL2 mean", "NaN/Inf",
                      *(["own INT8"] if isolated else []),
                      title=f"{escape(Path(r.path).name)} vs PyTorch ({r.runtime}, {r.images} images)",
                      title_justify="left")
        table.columns[0].no_wrap = True
        for t in r.taps:
            mark = "[bold red]" if t.name == r.first_divergence else ""
            table.add_row(f"{mark}{t.name}", _fmt(t.cosine, ".6f"), _fmt(t.max_abs, ".3g"), _fmt(t.rel_l2, ".3g"),
                          _fmt(t.mean_rel_l2, ".3g"), f"[red]{t.nonfinite}[/red]" if t.nonfinite else "0",
                          *([_fmt(t.isolated_rel_l2, ".3g")] if isolated else []))
        console.print(table)
        console.print(f"first divergence: [bold]{r.first_divergence or 'none'}[/bold]  (rule: {r.rule})",
                      highlight=False)
        console.print(f"largest jump: {r.largest_jump or 'none'}; worst taps: {', '.join(r.worst)}", highlight=False)
        if r.missing:
            console.print(f"[yellow]not in the artifact[/yellow]: {', '.join(r.missing)}", highlight=False)
        if isolated:
            top = ", ".join(f"{e['tap']} {_fmt(e['rel_l2'], '.3g')}" for e in r.isolate[:5])
            console.print(f"own INT8 error (logits rel L2 with only that tap's layers in INT8), worst first: {top}; "
                          f"all layers in float: {_fmt(r.isolate_float, '.3g')}", highlight=False)
