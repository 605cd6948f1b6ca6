"""Output folders written atomically: build in a private temp folder, rename into place.

Each private folder records who writes it (host and process id). A run killed before its
rename (SIGKILL, power loss) leaves its folder behind; the next run writing to the same
``--out`` removes such leftovers when their process is gone from this host, and only those.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserInputError

__all__ = ["writing", "prepare_out", "commit_out", "REPORT_JSON"]

REPORT_JSON = "report.json"  # every folder rmt-deploy writes has one
_OWNER = ".rmt-deploy-owner"


@contextlib.contextmanager
def writing(out: Path) -> Iterator[Path]:
    """Yield a private folder for ``out``; it replaces ``out`` when the block succeeds and is
    removed when the block fails (including Ctrl-C)."""
    tmp = prepare_out(out)
    try:
        yield tmp
        commit_out(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prepare_out(out: Path) -> Path:
    """Validate ``out``, remove abandoned temp folders beside it, create a private one."""
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is a file; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_JSON).exists():
        raise UserInputError(f"--out {out} is a non-empty folder that rmt-deploy did not write; "
                             "choose a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        (tmp / _OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        return tmp
    except OSError as e:
        raise UserInputError(f"cannot write to --out {out}: {e.strerror or e}") from None


def commit_out(tmp: Path, out: Path) -> None:
    out = out.expanduser().absolute()
    (tmp / _OWNER).unlink(missing_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is a normal folder
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def remove_abandoned(out: Path) -> list[Path]:
    """Delete ``.<out>.tmp-*`` folders whose writer has exited on this host; returns them.

    Folders without an owner record (being created, or from an older rmt-deploy), from another
    host (a shared file system) or from a live process are left alone.
    """
    removed = []
    for folder in out.parent.glob(f".{glob.escape(out.name)}.tmp-*"):
        try:
            owner = json.loads((folder / _OWNER).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(owner, dict) and owner.get("host") == socket.gethostname() and not _alive(owner.get("pid")):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0 or os.name == "nt":  # Windows: os.kill(pid, 0) is no probe
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
