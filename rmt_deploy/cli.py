"""rmt-deploy command line. Commands only parse options, call one library function, print.

Errors become one line on stderr with a non-zero exit code (2: bad input, 1: verification
failed or unexpected error). Set RMT_DEPLOY_DEBUG=1 to get the traceback instead.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import RmtDeployError, UserInputError

app = typer.Typer(
    name="rmt-deploy",
    help="Ship RMT vision backbones to ONNX Runtime, TensorRT, CoreML and OpenVINO with "
         "verified numbers and a report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err = Console(stderr=True)
out = Console()

# Shared option declarations keep flag names and help identical across commands.
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", "-w", help="Checkpoint (.pth/.pt/.pth.tar/.bin/.safetensors). Default: bundled demo.",
    show_default=False)]
ArchOpt = Annotated[Optional[str], typer.Option(
    "--arch", help="rmt-t/s/b/l (-tl for token-label) or official names (RMT_S…). Default: detected.",
    show_default=False)]
ImgSizeOpt = Annotated[Optional[str], typer.Option(
    "--img-size", help="Input size: 224 or HxW such as 256x320, multiples of 32. "
                       "Default: checkpoint hint, else 224.", show_default=False)]
TargetOpt = Annotated[list[str], typer.Option(
    "--target", "-t", help="Target(s), comma-separated or repeated: onnx, trt, coreml, openvino.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (replaced if it holds an "
                                                          "earlier rmt-deploy report).")]
EvalOpt = Annotated[Optional[Path], typer.Option(
    "--eval", help="ImageFolder (accuracy + parity), flat folder or .txt list (parity only). "
                   "Default: bundled calib/val.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="Runtime threads. Default: all cores.",
                                                   show_default=False)]

EXPORT_EXAMPLES = """
[b]Examples[/b]

  rmt-deploy export --target onnx                      [dim]# bundled demo model + images, offline[/dim]
  rmt-deploy export -w rmt_s.pth --target onnx         [dim]# official checkpoint, arch detected[/dim]
  rmt-deploy export -w ckpt.pth --arch rmt-t --img-size 256x320 --dynamic-batch --out out/
  rmt-deploy export --int8 --fp16                      [dim]# FP32 + INT8 + FP16, one report[/dim]
  rmt-deploy export -w ckpt.pth --int8 --calib /data/calib --eval /data/val --max-drop 0.5
  rmt-deploy export --target openvino --int8           [dim]# OpenVINO IR, NNCF INT8[/dim]
"""


@contextlib.contextmanager
def _errors_to_exit():
    """One exception → message table for every command."""
    try:
        yield
    except RmtDeployError as e:
        if os.environ.get("RMT_DEPLOY_DEBUG"):
            raise
        # escape: messages name extras such as "rmt-deploy[int8]", which rich would take for markup
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted; nothing was written")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # noqa: BLE001 — last resort: one line, traceback on demand
        if os.environ.get("RMT_DEPLOY_DEBUG"):
            raise
        if isinstance(e, MemoryError) or "can't allocate memory" in str(e):
            err.print("[bold red]error:[/bold red] out of memory; try a smaller --img-size, fewer "
                      "--parity-samples or a machine with more RAM", highlight=False)
            raise typer.Exit(1) from None
        _unexpected(e)


def _unexpected(e: BaseException) -> None:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    err.print(f"[bold red]error:[/bold red] unexpected {type(e).__name__}: {escape(first)} "
              "(set RMT_DEPLOY_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from None


class RichProgress:
    """Progress on stderr: a spinner per step (then ✓ and the elapsed time), bars for counted work."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, description: str):
        if self.quiet:
            yield
            return
        start = time.perf_counter()
        with err.status(f"{description}…", spinner="dots"):
            yield
        err.print(f"[green]✓[/green] {description} [dim]({time.perf_counter() - start:.1f}s)[/dim]",
                  highlight=False)

    @contextlib.contextmanager
    def bar(self, description: str, total: int):
        if self.quiet:
            yield lambda n=1: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def log(self, message: str) -> None:
        if not self.quiet:
            err.print(f"[yellow]![/yellow] {escape(message)}", highlight=False)


def _split_targets(values: list[str]) -> tuple[str, ...]:
    return tuple(t for v in values for t in v.split(",") if t.strip())


# CLI parameter → ExportOptions / CoreMLSettings field where the names differ (presets merge by field).
_FIELD_OF = {"target": "targets", "out_dir": "out", "license_text": "license"}


@app.command(epilog=EXPORT_EXAMPLES)
def export(
    ctx: typer.Context,
    preset: Annotated[Optional[str], typer.Option(
        "--preset", help="A deployment recipe: a shipped preset name (see `rmt-deploy presets`) or a .toml file. "
                         "Flags given here override it.", show_default=False)] = None,
    weights: WeightsOpt = None,
    arch: ArchOpt = None,
    img_size: ImgSizeOpt = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--no-dynamic-batch", help="Batch axis dynamic in the ONNX.")] = False,
    target: TargetOpt = ["onnx"],  # noqa: B006 — typer reads the default
    out_dir: OutOpt = Path("rmt-deploy-out"),
    eval_dir: EvalOpt = None,
    label_map: Annotated[Optional[Path], typer.Option("--label-map", help="JSON: class folder name → class "
                                                      "name, recorded in the report and ONNX metadata.",
                                                      show_default=False)] = None,
    parity_samples: Annotated[int, typer.Option("--parity-samples", help="Images for the parity check.")] = 16,
    atol: Annotated[float, typer.Option("--atol", help="Max abs logit difference allowed vs PyTorch (FP32).")] = 1e-4,
    bench_iters: Annotated[int, typer.Option("--bench-iters", help="Timed runs for latency (0: skip).")] = 30,
    threads: ThreadsOpt = None,
    strict: Annotated[bool, typer.Option("--strict/--no-strict", help="Stop at the first target that fails instead of "
                                                         "recording it in the report.")] = False,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Write an INT8 model (ONNX, TensorRT, OpenVINO: "
                                                      "post-training, calibrated with NNCF on real images; CoreML: "
                                                      "INT8 weights).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16/--no-fp16", help="Write an FP16 model (ONNX: FP32 inputs/outputs).")] = False,
    fp32: Annotated[bool, typer.Option("--fp32/--no-fp32", help="Write an FP32 model (ONNX always does; CoreML's "
                                                      "default is FP16).")] = False,
    calib: Annotated[Optional[Path], typer.Option(
        "--calib", help="INT8 calibration images: ImageFolder, flat folder or .txt list. "
                        "Default: bundled calib/train.", show_default=False)] = None,
    calib_size: Annotated[int, typer.Option("--calib-size", help="Calibration images (an evenly spread, "
                                                                 "deterministic subset).")] = 256,
    max_drop: Annotated[Optional[float], typer.Option(
        "--max-drop", help="INT8 top-1 budget in points vs FP32; over it, the most sensitive layers go back "
                           "to float until it fits (needs a labelled --eval).", show_default=False)] = None,
    statistic: Annotated[str, typer.Option("--statistic", help="Activation range estimator: minmax, "
                                                               "mean-minmax, quantile, histogram.")] = "minmax",
    image_input: Annotated[bool, typer.Option(
        "--image-input/--no-image-input", help="CoreML: take an RGB image (camera frames, Vision) with the normalisation built "
                              "in, instead of a normalised float tensor.")] = False,
    min_target: Annotated[str, typer.Option("--min-target", help="CoreML: oldest OS to run on, e.g. iOS16, "
                                                                 "iOS17, macOS14.")] = "iOS16",
    w8a8: Annotated[bool, typer.Option("--w8a8/--no-w8a8", help="CoreML with --int8: INT8 activations too (iOS17+, "
                                                      "calibrated with Core ML predict: macOS only).")] = False,
    license_text: Annotated[str, typer.Option("--license", help="CoreML: licence text stored in the package.",
                                              show_default=False)] = "",
    require_engine: Annotated[bool, typer.Option(
        "--require-engine/--no-require-engine", help="TensorRT: fail (exit 2) when no engine can be built here instead of writing "
                                 "the TensorRT-ready ONNX and build_engine.sh only.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a checkpoint to deploy-ready artifacts, verify them on real images, write a report.

    ONNX always writes FP32 (the baseline); --int8 and --fp16 add artifacts to the same report.
    Other targets write the precisions asked for, or their default (CoreML: FP16)."""
    with _errors_to_exit():
        from .pipeline import ExportOptions, run_export
        from .presets import load_preset, merge
        from .sizes import parse_img_size
        from .targets.coreml import CoreMLSettings

        flags = dict(
            weights=weights, arch=arch, img_size=parse_img_size(img_size) if img_size else None,
            dynamic_batch=dynamic_batch, targets=_split_targets(target), out=out_dir,
            eval_dir=eval_dir, label_map=label_map, parity_samples=parity_samples, atol=atol, bench_iters=bench_iters,
            threads=threads, strict=strict, int8=int8, fp16=fp16, fp32=fp32, calib=calib, calib_size=calib_size,
            max_drop=max_drop, statistic=statistic, require_engine=require_engine)
        coreml = dict(image_input=image_input, min_target=min_target, w8a8=w8a8, license=license_text)
        # Flags the user typed (by the source's name: typer's enum class is not public API).
        given = {_FIELD_OF.get(name, name) for name in ctx.params
                 if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT")}
        flags, coreml = merge(load_preset(preset) if preset else None, flags, coreml, given)
        opts = ExportOptions(**flags, coreml=CoreMLSettings(**coreml))
        report = run_export(opts, RichProgress(quiet or as_json))
        if as_json:
            out.print_json(json.dumps(report))
        else:
            _print_export_summary(report, out_dir)


def _print_export_summary(report: dict, out_dir: Path) -> None:
    table = Table(title=f"{report['model']['variant']} @ {'x'.join(map(str, report['model']['input_size']))}",
                  title_justify="left")
    for col in ("target", "precision", "status", "size", "max diff", "top-1", "agree", "p50 ms"):
        table.add_column(col, justify="left" if col in ("target", "precision", "status") else "right")
    for a in report["artifacts"]:
        acc, lat, par = a.get("accuracy") or {}, a.get("latency_ms") or {}, a.get("parity") or {}
        table.add_row(a["target"], a["precision"], a["status"],
                      f"{a['size_bytes'] / 1e6:.1f} MB" if a.get("size_bytes") else "—",
                      f"{par['max_abs']:.1e}" if par else "—",
                      f"{acc['top1']:.2f}" if acc else "—",
                      f"{acc['agreement'] * 100:.1f}%" if acc else "—",
                      f"{lat['p50']:.2f}" if lat else "—")
    out.print(table)
    out.print(f"report: {out_dir / 'report.md'}  ({out_dir / 'report.json'})", highlight=False)


BENCH_EXAMPLES = """
[b]Examples[/b]

  rmt-deploy bench --from rmt-deploy-out --batch 1,8,32     [dim]# updates that folder's report[/dim]
  rmt-deploy bench model.onnx --threads 2 --iters 100 --out bench/
  rmt-deploy bench --from out/ --eval /data/val             [dim]# accuracy per artifact too[/dim]
  rmt-deploy bench model_int8.xml --device CPU --hint throughput --batch 1,8
"""

CHECK_EXAMPLES = """
[b]Examples[/b]

  rmt-deploy check out/report.json                          [dim]# drop vs the same report's FP32[/dim]
  rmt-deploy check out/report.json --baseline main/report.json --max-latency-regression 0.1
  rmt-deploy check out/report.json --config limits.json --junit results.xml
"""


@app.command("presets")
def presets_command(as_json: JsonOpt = False) -> None:
    """List the shipped export presets (use one with `rmt-deploy export --preset NAME`)."""
    with _errors_to_exit():
        from .presets import list_presets

        found = list_presets()
        if as_json:
            out.print_json(json.dumps([{"name": p.name, "path": str(p.path), "description": p.description}
                                       for p in found]))
            return
        table = Table("preset", "recipe", title="Export presets (rmt-deploy export --preset NAME)", title_justify="left")
        for p in found:
            table.add_row(p.name, escape(p.description))
        out.print(table)


@app.command(epilog=BENCH_EXAMPLES)
def bench(
    artifacts: Annotated[Optional[list[Path]], typer.Argument(help="Artifact files (model.onnx …).",
                                                              show_default=False)] = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from", help="Export folder: benchmark its artifacts "
                                                     "and update its report.", show_default=False)] = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated.")] = "1",
    threads: ThreadsOpt = None,
    iters: Annotated[int, typer.Option("--iters", help="Minimum timed runs per cell.")] = 30,
    min_time: Annotated[float, typer.Option("--min-time", help="Minimum seconds of timed runs per cell.")] = 1.0,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 5,
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="ImageFolder: top-1, drop, agreement "
                                                     "per artifact.", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder when artifacts are given as "
                                          "files.")] = Path("rmt-deploy-bench"),
    no_reference: Annotated[bool, typer.Option("--no-reference", help="Skip timing the PyTorch reference.")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="OpenVINO device: CPU, GPU, NPU, AUTO … "
                                                  "Default: every device OpenVINO sees.", show_default=False)] = None,
    hint: Annotated[str, typer.Option("--hint", help="OpenVINO performance hint: latency, or throughput (also "
                                      "measures images/s with parallel requests).")] = "latency",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Benchmark artifacts across batch sizes: latency, throughput, load time, memory, accuracy."""
    with _errors_to_exit():
        from .bench.matrix import BenchOptions, parse_batches, run_bench

        opts = BenchOptions(artifacts=tuple(artifacts or ()), from_dir=from_dir, batches=parse_batches(batch),
                            threads=threads, min_iters=iters, min_seconds=min_time, warmup=warmup,
                            eval_dir=eval_dir, out=out_dir, reference=not no_reference, device=device,
                            hint=hint.strip().lower())
        report = run_bench(opts, RichProgress(quiet or as_json))
        if as_json:
            out.print_json(json.dumps(report))
            return
        _print_matrix(report)
        where = from_dir or out_dir
        out.print(f"report: {where / 'report.md'}  ({where / 'report.json'}, {where / 'plot.png'})", highlight=False)


def _print_matrix(report: dict) -> None:
    table = Table(title="benchmark matrix", title_justify="left")
    for col in ("target", "prec.", "runtime", "batch", "status", "top-1", "drop", "p50 ms", "p99 ms", "img/s"):
        table.add_column(col, justify="left" if col in ("target", "prec.", "runtime", "status") else "right",
                         no_wrap=True)
    notes = []
    for a in report["artifacts"] + report.get("reference_runs", []):
        acc = a.get("accuracy") or {}
        for b in a.get("benchmarks") or [{"batch": "—", **a}]:
            lat = b.get("latency_ms") or {}
            status = b["status"] + (" [yellow]noisy[/yellow]" if lat.get("noisy") else "")
            if b.get("reason"):
                notes.append(f"{a['target']}/{a['precision']} batch {b['batch']}: {b['reason']}")
            runtime = (b.get("runtime") or "").replace("onnxruntime ", "ort ").replace("ExecutionProvider", "")
            table.add_row(a["target"], a["precision"], runtime.split(" eager")[0], str(b["batch"]), status,
                          f"{acc['top1']:.2f}" if acc.get("top1") is not None else "—",
                          f"{acc['drop']:.2f}" if acc.get("drop") is not None else "—",
                          f"{lat['p50']:.2f}" if lat else "—", f"{lat['p99']:.2f}" if lat else "—",
                          f"{b['throughput']:.0f}" if b.get("throughput") else "—")
    out.print(table)
    for note in dict.fromkeys(notes):
        out.print(f"  [dim]{escape(note)}[/dim]", highlight=False)


@app.command(epilog=CHECK_EXAMPLES)
def check(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="report.json to check.", show_default=False)],
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="Earlier report.json to compare "
                                                     "with (same target/precision).", show_default=False)] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Allowed top-1 drop, in points.")] = 0.5,
    max_latency_regression: Annotated[float, typer.Option(
        "--max-latency-regression", help="Allowed p50 increase vs the baseline (0.15 = 15%).")] = 0.15,
    config: Annotated[Optional[Path], typer.Option("--config", help="JSON limits per target "
                                                   "(override the flags).", show_default=False)] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write JUnit XML here.",
                                                  show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Gate CI: accuracy drop and latency regression per artifact; exit 1 if any check fails."""
    with _errors_to_exit():
        from .bench.check import Limits, check_report, load_limits, read_report, write_junit

        report = read_report(report_path)
        base = read_report(baseline, "baseline") if baseline else None
        results = check_report(report, base, load_limits(config, Limits(max_drop, max_latency_regression)))
        if junit:
            write_junit(results, junit)
        failed = [r for r in results if r.outcome == "fail"]
        if as_json:
            out.print_json(json.dumps({"passed": not failed, "results": [r.to_dict() for r in results]}))
        else:
            table = Table("artifact", "check", "result", "detail", title="rmt-deploy check", title_justify="left")
            colour = {"pass": "green", "fail": "red", "skip": "dim"}
            for r in results:
                table.add_row(r.artifact, r.check, f"[{colour[r.outcome]}]{r.outcome}[/]", r.reason)
            out.print(table)
            out.print(f"{len(failed)} failed, {sum(r.outcome == 'pass' for r in results)} passed, "
                      f"{sum(r.outcome == 'skip' for r in results)} skipped", highlight=False)
        if failed:
            raise typer.Exit(1)


@app.command()
def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file to describe.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Describe a checkpoint: architecture, parameters, classes, resolution hints, other entries."""
    with _errors_to_exit():
        from .model.checkpoint import inspect_checkpoint

        info = inspect_checkpoint(checkpoint)
        if as_json:
            out.print_json(json.dumps(info))
            return
        table = Table(show_header=False, box=None)
        rows = [
            ("file", f"{info['path']} ({info['size_bytes'] / 1e6:.1f} MB, {info['format']})"),
            ("sha256", info["sha256"]),
            ("architecture", info["arch"] or f"[red]unknown[/red] — {info['arch_problem']}"),
            ("parameters", f"{info['params_m']:.2f} M ({info['tensors']} tensors, {', '.join(info['dtypes'])})"),
            ("classes", str(info["num_classes"])),
            ("token-label head", "yes" if info["token_label"] else "no"),
            ("weights found under", info["weights_entry"] or "(top level)"),
            ("ignored entries", ", ".join(info["other_entries"]) or "none"),
            ("resolution", (f"trained at {info['resolution_hint']}; " if info["resolution_hint"] else "")
             + (info["resolution_rule"] or "")),
        ]
        for key, value in info["metadata"].items():
            rows.append((f"metadata {key}", value))
        for key, value in rows:
            table.add_row(f"[bold]{key}[/bold]", value)
        out.print(table)


@app.command("build-engine")
def build_engine(
    onnx_path: Annotated[Path, typer.Argument(help="TensorRT-ready ONNX (model_*.trt.onnx from export --target trt).",
                                              show_default=False)],
    engine: Annotated[Optional[Path], typer.Option("--out", help="Engine file (default: next to the ONNX, "
                                                                 ".engine).", show_default=False)] = None,
    workspace: Annotated[float, typer.Option("--workspace", help="Builder workspace in GiB.")] = 2.0,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file, reused and "
                                                         "updated (faster rebuilds).", show_default=False)] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", help="Run on this DLA core (Jetson), GPU "
                                                    "fallback for unsupported layers.", show_default=False)] = None,
    min_batch: Annotated[int, typer.Option("--min-batch", help="Profile minimum batch (dynamic-batch ONNX).")] = 1,
    opt_batch: Annotated[int, typer.Option("--opt-batch", help="Profile batch to optimise for.")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Profile maximum batch.")] = 32,
) -> None:
    """Build a TensorRT engine on this machine (needs TensorRT and an NVIDIA GPU) and its sidecar JSON."""
    with _errors_to_exit():
        from .targets.tensorrt import EngineSettings, sidecar_path
        from .targets.tensorrt import build_engine as build

        if not onnx_path.is_file():
            raise UserInputError(f"{onnx_path} does not exist; pass a TensorRT-ready ONNX file")
        settings = EngineSettings(workspace, timing_cache, dla_core, min_batch, opt_batch, max_batch)
        settings.check()
        target = engine or onnx_path.with_name(onnx_path.name.removesuffix(".onnx").removesuffix(".trt") + ".engine")
        with out.status(f"Building {target.name} with TensorRT (minutes on a Jetson)"):
            sidecar = build(onnx_path, target, settings)
        out.print(f"engine: {target} (TensorRT {sidecar['tensorrt']}, {sidecar['gpu']}, "
                  f"{sidecar['build_seconds']:.0f} s); sidecar: {sidecar_path(target)}", highlight=False)


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Show which backends are installed and usable here, and why not."""
    with _errors_to_exit():
        from .doctor import diagnose

        info = diagnose()
        if as_json:
            out.print_json(json.dumps(info))
            return
        m = info["machine"]
        isa = m["cpu_features"]
        out.print(f"[bold]CPU[/bold] {m['cpu']}  |  {', '.join(isa['isa']) or 'ISA unknown'}  |  int8 accumulation: "
                  f"{isa['int8_accumulation']}  |  ONNX Runtime providers: "
                  f"{', '.join(m['onnxruntime_providers']) or '—'}", highlight=False)
        colour = {"ok": "green", "missing": "yellow", "broken": "red", "unavailable": "red"}
        pk = Table("package", "status", "detail", "for", title="Packages", title_justify="left")
        for row in info["packages"]:
            detail = row["detail"] + (f" — {row['install']}" if row["install"] else "")
            # escape: rich would read the extra in 'rmt-deploy[trt]' as markup and drop it
            pk.add_row(row["package"], f"[{colour[row['status']]}]{row['status']}[/]", escape(detail), row["purpose"])
        out.print(pk)
        tg = Table("target", "status", "detail", title="Targets", title_justify="left")
        for row in info["targets"]:
            tg.add_row(row["target"], f"[{colour[row['status']]}]{row['status']}[/]", escape(row["detail"]))
        out.print(tg)
        for key, value in info["bundled"].items():
            out.print(f"[bold]{key.replace('_', ' ')}[/bold]: {value or '[yellow]not found[/yellow]'}",
                      highlight=False)


def main() -> None:
    app(prog_name="rmt-deploy")


if __name__ == "__main__":
    main()
