"""Commands that describe rather than build: presets, inspect, doctor — and build-engine on the device."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import UserInputError
from .app import JsonOpt, Output, app, errors_to_exit


@app.command("presets")
def presets_command(as_json: JsonOpt = False) -> None:
    """List the shipped export presets (use one with `rmt-deploy export --preset NAME`)."""
    with errors_to_exit():
        from ..jobs.presets import list_presets

        found = list_presets()

        def table(out: Console) -> None:
            rows = Table("preset", "recipe", "with your checkpoint (-w), add",
                         title="Export presets (rmt-deploy export --preset NAME)", title_justify="left")
            for p in found:
                rows.add_row(p.name, escape(p.description), escape(", ".join(p.needs)) or "—")
            out.print(rows)

        Output(as_json).result([{"name": p.name, "path": str(p.path), "description": p.description, "needs": p.needs}
                                for p in found], table)


@app.command("demo-images")
def demo_images_command(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder to copy them into.")] = Path("digits"),
    as_json: JsonOpt = False,
) -> None:
    """Copy the bundled demo images (digits: train/ for calibration, val/ for evaluation) into a folder,
    to try predict, --calib and --eval on real files."""
    with errors_to_exit():
        from ..bundled import copy_demo_images

        folder = copy_demo_images(dest)
        count = {split: sum(1 for p in (folder / split).rglob("*.png")) for split in ("train", "val")}
        Output(as_json).result({"path": str(folder), "images": count}, lambda out: None,
                               f"{count['train']} train and {count['val']} val images in {folder}/ "
                               "(one folder per digit class)")


@app.command()
def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file to describe.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Describe a checkpoint: architecture, parameters, classes, resolution hints, other entries."""
    with errors_to_exit():
        from ..model.checkpoint import inspect_checkpoint

        info = inspect_checkpoint(checkpoint)
        Output(as_json).result(info, lambda out: _checkpoint_table(out, info))


def _checkpoint_table(out: Console, info: dict) -> None:
    table = Table(show_header=False, box=None)
    rows = [
        ("file", f"{info['path']} ({info['size_bytes'] / 1e6:.1f} MB, {info['format']})"),
        ("sha256", info["sha256"]),
        ("kind", info["task"] + (f" checkpoint; also holds {', '.join(info['other_parts'])} (not loaded)"
                                 if info["other_parts"] else " checkpoint")),
        ("architecture", (("backbone " if info["task"] != "classification" else "") + info["arch"]) if info["arch"]
         else f"[red]unknown[/red] — {info['arch_problem']}"),
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
    with errors_to_exit():
        from ..targets.tensorrt import EngineSettings, engine_summary
        from ..targets.tensorrt import build_engine as build

        if not onnx_path.is_file():
            raise UserInputError(f"{onnx_path} does not exist; pass a TensorRT-ready ONNX file")
        settings = EngineSettings(workspace, timing_cache, dla_core, min_batch, opt_batch, max_batch)
        settings.check()
        target = engine or onnx_path.with_name(onnx_path.name.removesuffix(".onnx").removesuffix(".trt") + ".engine")
        out = Output().console
        with out.status(f"Building {target.name} with TensorRT (minutes on a Jetson)"):
            sidecar = build(onnx_path, target, settings)
        out.print(engine_summary(target, sidecar), highlight=False)


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Show which backends are installed and usable here, and why not."""
    with errors_to_exit():
        from ..jobs.doctor import diagnose

        info = diagnose()
        Output(as_json).result(info, lambda out: _doctor_tables(out, info))


def _doctor_tables(out: Console, info: dict) -> None:
    m = info["machine"]
    isa = m["cpu_features"]
    out.print(f"[bold]CPU[/bold] {m['cpu']}  |  {', '.join(isa['isa']) or 'ISA unknown'}  |  int8 accumulation: "
              f"{isa['int8_accumulation']}  |  ONNX Runtime providers: "
              f"{', '.join(m['onnxruntime_providers']) or '—'}", highlight=False)
    default = m.get("openvino_cpu_default_precision")
    if default and default != "f32":
        out.print(f"[bold]OpenVINO[/bold] CPU default inference precision: {default} — rmt-deploy compiles IRs with "
                  "the setting they were verified with (EXECUTION_MODE_HINT=ACCURACY, f32); --execution default "
                  "measures the device default", highlight=False)
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


