"""The progress interface long jobs report to: silent, or rich spinners and bars on stderr."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

__all__ = ["NullProgress", "RichProgress"]


class NullProgress:
    """Progress sink used when nobody is watching (library calls, tests).

    Any object with these three methods can stand in: ``step`` around one piece of work,
    ``bar`` for counted work (yields ``advance(n)``), ``log`` for a one-line notice.
    """

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator:
        yield lambda n=1: None

    def log(self, message: str) -> None:
        pass


class RichProgress:
    """Progress on stderr: a spinner per step (then ✓ and the elapsed time), bars for counted work."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.quiet, self.err = quiet, Console(stderr=True)

    @contextlib.contextmanager
    def step(self, description: str):
        if self.quiet:
            yield
            return
        start = time.perf_counter()
        with self.err.status(f"{description}…", spinner="dots"):
            yield
        self.err.print(f"[green]✓[/green] {description} [dim]({time.perf_counter() - start:.1f}s)[/dim]",
                       highlight=False)

    @contextlib.contextmanager
    def bar(self, description: str, total: int):
        if self.quiet:
            yield lambda n=1: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.err) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def log(self, message: str) -> None:
        from rich.markup import escape

        if not self.quiet:
            self.err.print(f"[yellow]![/yellow] {escape(message)}", highlight=False)
