"""Silence chatty libraries (exporters, NNCF, converters) so the CLI output stays readable."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

__all__ = ["quiet"]


@contextlib.contextmanager
def quiet(*logger_names: str) -> Iterator[None]:
    """Raise these loggers to ERROR, drop warnings and stdout; no-op with RMT_DEPLOY_DEBUG set."""
    if os.environ.get("RMT_DEPLOY_DEBUG"):
        yield
        return
    loggers = [logging.getLogger(n) for n in logger_names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
