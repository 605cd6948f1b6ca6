"""Silence chatty libraries (exporters, NNCF, converters) so the CLI output stays readable."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

__all__ = ["quiet", "native_quiet"]


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


@contextlib.contextmanager
def native_quiet() -> Iterator[None]:
    """Silence file descriptors 1 and 2 for native code that prints there itself (MNN's banner and
    converter log); no-op with RMT_DEPLOY_DEBUG set."""
    if os.environ.get("RMT_DEPLOY_DEBUG"):
        yield
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
