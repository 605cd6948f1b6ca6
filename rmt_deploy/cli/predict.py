"""`rmt-deploy predict`: run an exported artifact on images, print the top classes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..targets import TARGETS
from .app import ExecutionOpt, JsonOpt, Output, QuietOpt, ThreadsOpt, app, errors_to_exit

EXAMPLES = """
[b]Examples[/b]

  rmt-deploy predict out/model_int8.onnx photos/*.jpg          [dim]# top-5 per image[/dim]
  rmt-deploy predict out/model_fp16.xml cat.jpg --topk 1 --json
  rmt-deploy predict out/model.onnx photos/ --batch 16          [dim]# a folder: every image in it[/dim]
  rmt-deploy predict out/model.onnx                             [dim]# the bundled demo images[/dim]

Exit codes: 0 when every input was read; 2 when one could not be (the rest are still
predicted and listed; --skip-unreadable makes that 0) or when none could be.
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
    artifact: Annotated[Path, typer.Argument(help="An exported model: " + ", ".join(
        f"{t.suffix} ({t.title})" for t in TARGETS.values()) + ".", show_default=False)],
    images: Annotated[Optional[list[Path]], typer.Argument(
        help="Image files or folders of images. Default: the bundled demo images.", show_default=False)] = None,
    topk: Annotated[int, typer.Option("--topk", help="Classes to show per image.")] = 5,
    batch: Annotated[int, typer.Option("--batch", help="Images per call (artifacts with a fixed batch run one "
                                                       "at a time).")] = 8,
    threads: ThreadsOpt = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="ONNX Runtime provider, OpenVINO device or "
                                                   "Core ML compute units. Default: the target's first.",
                                                   show_default=False)] = None,
    execution: ExecutionOpt = "verified",
    skip_unreadable: Annotated[bool, typer.Option("--skip-unreadable", help="Exit 0 even when some inputs could "
                                                  "not be read (they are still listed); at least one must be.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run an exported artifact on images with the preprocessing recorded in it; top-k classes per image."""
    with errors_to_exit():
        from ..bundled import bundled_images
        from ..errors import UserInputError
        from ..jobs.predict import Model

        if not artifact.exists():
            raise UserInputError(f"artifact not found: {artifact}")
        paths = _expand(images or [bundled_images("val")])
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise UserInputError(f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                    if len(missing) > 1 else ""))
        if not paths:
            raise UserInputError("no images found in the folders given")
        output = Output(as_json, quiet)
        with Model.open(artifact, runtime=runtime, threads=threads, execution=execution.strip().lower()) as model:
            if model.cpu_warning:
                output.progress.log(f"warning: {model.cpu_warning}")
            if not images:
                output.progress.log(f"no images given: predicting on the {len(paths)} bundled demo images")
            with output.progress.bar(f"Predicting with {artifact.name}", len(paths)) as advance:
                results = model.predict(paths, topk=topk, batch=batch, advance=advance)
        skipped = [r for r in results if not r.ok]
        if len(skipped) == len(results):
            raise UserInputError(f"none of the {len(results)} input(s) could be read: {_listed(skipped)}")
        output.result([r.to_dict() for r in results], lambda console: _table(console, results),
                      f"{len(results) - len(skipped)} image(s) predicted, {len(skipped)} skipped")
        if skipped and not skip_unreadable:
            raise UserInputError(f"{len(skipped)} of {len(results)} input(s) could not be read: {_listed(skipped)} "
                                 "(pass --skip-unreadable to exit 0 anyway)")


def _listed(skipped) -> str:
    """The first few unreadable inputs with their reasons, on one line."""
    shown = "; ".join(r.error if Path(r.source).name in r.error else f"{r.source}: {r.error}" for r in skipped[:3])
    return shown + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")


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
