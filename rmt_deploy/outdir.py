"""Output folders written atomically: build in a private temp folder, rename into place."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .bench.report import REPORT_JSON
from .errors import UserInputError

__all__ = ["prepare_out", "commit_out"]


def prepare_out(out: Path) -> Path:
    """Validate ``out`` and create the private temp folder beside it."""
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is a file; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_JSON).exists():
        raise UserInputError(f"--out {out} is a non-empty folder that rmt-deploy did not write; "
                             "choose a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise UserInputError(f"cannot write to --out {out}: {e.strerror or e}") from None


def commit_out(tmp: Path, out: Path) -> None:
    out = out.expanduser().absolute()
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is a normal folder
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)

