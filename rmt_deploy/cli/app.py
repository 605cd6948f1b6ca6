"""The typer app, the options every command shares, errors → exit codes, progress, output.

Errors become one line on stderr with a non-zero exit code (2: bad input, 1: an artifact failed,
or an internal error, which asks to be reported). Set RMT_DEPLOY_DEBUG=1 to get the traceback instead.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import RmtDeployError
from ..progress import RichProgress
from ..targets import TARGETS

__all__ = ["app", "err", "Output", "errors_to_exit", "WeightsOpt", "ArchOpt", "ImgSizeOpt", "TargetOpt", "OutOpt",
           "JsonOpt", "QuietOpt", "ThreadsOpt"]

def _titles() -> str:
    titles = list(dict.fromkeys(t.title for t in TARGETS.values()))
    return ", ".join(titles[:-1]) + " and " + titles[-1]


app = typer.Typer(
    name="rmt-deploy",
    help=f"Ship RMT vision backbones to {_titles()} with verified numbers and a report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err = Console(stderr=True)

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
    "--target", "-t", help="Target(s), comma-separated or repeated: "
    + ", ".join(f"{t.name} ({t.summary})" if t.summary else t.name for t in TARGETS.values()) + ".")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (replaced if it holds an "
                                                          "earlier rmt-deploy report).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (no progress).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no tables: only where the report "
                                                              "went, and errors.")]
ExecutionOpt = Annotated[str, typer.Option(
    "--execution", help="verified: compile with the settings the artifact records it was verified with (OpenVINO: "
    "EXECUTION_MODE_HINT=ACCURACY); default: the runtime's own defaults (OpenVINO computes float layers in bf16 "
    "on CPUs with AVX512-BF16 or AMX).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="Runtime threads (1 or more). "
                                                   "Default: all cores.", show_default=False)]


def _print_version(value: bool) -> None:
    if value:
        from ..version import __version__

        typer.echo(f"rmt-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    pass  # options that come before any command (--version); the app's help says what it does


@contextlib.contextmanager
def errors_to_exit():
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
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {e.filename}" if e.filename else ""
            err.print(f"[bold red]error:[/bold red] no space left on the device{escape(where)}; nothing "
                      "half-written was kept: free some space or write to another folder", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(1) from None
        if isinstance(e, MemoryError) or "can't allocate memory" in str(e):
            err.print("[bold red]error:[/bold red] out of memory; try a smaller --img-size, fewer "
                      "--parity-samples or a machine with more RAM", highlight=False)
            raise typer.Exit(1) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        err.print(f"[bold red]internal error:[/bold red] {type(e).__name__}: {escape(first)} — a bug in "
                  "rmt-deploy or a library it calls; please report it with the traceback (rerun with "
                  "RMT_DEPLOY_DEBUG=1)", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


class Output:
    """Where a command's result goes: ``human`` (rich tables on stdout, progress on stderr),
    ``json`` (the result as JSON on stdout, nothing else) or ``quiet`` (one line at most)."""

    def __init__(self, as_json: bool = False, quiet: bool = False) -> None:
        self.mode = "json" if as_json else "quiet" if quiet else "human"
        self.console = Console()
        self.progress = RichProgress(self.mode != "human")

    def result(self, data, human: Callable[[Console], None], summary: str | None = None) -> None:
        """Print ``data`` as JSON, or let ``human`` draw it, or print ``summary`` only."""
        if self.mode == "json":
            self.console.print_json(json.dumps(data))
            return
        if self.mode == "human":
            human(self.console)
        if summary:
            self.console.print(summary, highlight=False)
