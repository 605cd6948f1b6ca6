"""`rmt-deploy predict`: run an exported artifact on images, print the top classes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .app import ExecutionOpt, JsonOpt, Output, QuietOpt, ThreadsOpt, app, errors_to_exit

EXAMPLES = """
[b]Examples[/b]

  rmt-deploy predict out/model_int8.onnx photos/*.jpg          [dim]# top-5 per image[/dim]
  rmt-deploy predict out/model_fp16.xml cat.jpg --topk 1 --json
  rmt-deploy predict out/model.onnx calib/val --batch 16        [dim]# a folder: every image in it[/dim]
"""


def _expand(inputs: list[Path]) -> list[Path]:
    """Folders become the images in them (sorted, recursively); files stay as given."""
    from ..data.images import IMAGE_SUFFIXES

    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(item)
    return found


@app.command(epilog=EXAMPLES)
def predict(
    artifact: Annotated[Path, typer.Argument(help="An exported model: .onnx, .xml (OpenVINO), .engine, .mlpackage.",
                                             show_default=False)],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.", show_default=False)],
    topk: Annotated[int, typer.Option("--topk", help="Classes to show per image.")] = 5,
    batch: Annotated[int, typer.Option("--batch", help="Images per call (artifacts with a fixed batch run one "
                                                       "at a time).")] = 8,
    threads: ThreadsOpt = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="ONNX Runtime provider, OpenVINO device or "
                                                   "Core ML compute units. Default: the target's first.",
                                                   show_default=False)] = None,
    execution: ExecutionOpt = "verified",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run an exported artifact on images with the preprocessing recorded in it; top-k classes per image."""
    with errors_to_exit():
        from ..errors import UserInputError
        from ..jobs.predict import Model

        if not artifact.exists():
            raise UserInputError(f"artifact not found: {artifact}")
        paths = _expand(images)
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UserInputError(f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                    if len(missing) > 1 else ""))
        if not paths:
            raise UserInputError("no images found in the folders given")
        output = Output(as_json, quiet)
        with Model.open(artifact, runtime=runtime, threads=threads, execution=execution.strip().lower()) as model:
            with output.progress.bar(f"Predicting with {artifact.name}", len(paths)) as advance:
                results = model.predict(paths, topk=topk, batch=batch, advance=advance)
        skipped = [r for r in results if not r.ok]
        for r in skipped:
            output.progress.log(f"skipped {r.source}: {r.error}")
        output.result([r.to_dict() for r in results], lambda console: _table(console, results),
                      f"{len(results) - len(skipped)} image(s) predicted, {len(skipped)} skipped")


def _table(console: Console, results) -> None:
    table = Table("image", "top-1", "prob.", "top-k", title="predictions", title_justify="left")
    for r in results:
        if not r.ok:
            table.add_row(escape(r.source), "[yellow]skipped[/yellow]", "—", escape(r.error))
            continue
        name = lambda i: r.names[i] if r.names[i] is not None else str(r.indices[i])  # noqa: E731
        rest = ", ".join(f"{name(i)} {r.probabilities[i]:.3f}" for i in range(1, len(r.indices)))
        table.add_row(escape(r.source), escape(name(0)), f"{r.probabilities[0]:.3f}", escape(rest) or "—")
    console.print(table)
