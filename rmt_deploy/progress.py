"""The progress interface long jobs report to; the CLI supplies a rich one."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["NullProgress"]


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
