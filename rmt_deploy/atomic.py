"""Write-then-rename: a file or folder appears complete or not at all.

Every artifact, report and script rmt-deploy writes goes through ``atomic_path``: the writer
fills a hidden temporary path beside the final one, which is renamed into place only when the
writer returns. A crash or an exception leaves the final path as it was.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path, *companions: str) -> Iterator[Path]:
    """Yield a temporary path with ``path``'s suffix (converters check it); rename it to ``path``
    when the block succeeds, remove it when it fails.

    A writer that decides not to write leaves ``path`` as it was. ``companions`` are suffixes of files written beside it under the same stem (OpenVINO's
    ``.bin`` next to the ``.xml``); they are renamed first, so the main file never points at
    missing parts.
    """
    path = Path(path)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    parts = [(tmp.with_suffix(s), path.with_suffix(s)) for s in companions]
    for part, _ in [(tmp, path), *parts]:
        _remove(part)
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            return
        for part, final in parts:
            os.replace(part, final)
        if path.is_dir() and tmp.is_dir():  # os.replace cannot replace a non-empty folder
            _remove(path)
        os.replace(tmp, path)
    finally:
        for part, _ in [(tmp, path), *parts]:
            _remove(part)


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        if mode is not None:
            tmp.chmod(mode)
    return Path(path)
