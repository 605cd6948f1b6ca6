"""Output folders written atomically: build in a private temp folder, rename into place.

Each private folder's name records who writes it (``.<out>.tmp-<host>-<pid>-<random>``, the
host as a short hash). A run killed before its rename (SIGKILL, power loss) leaves its folder
behind; the next run writing to the same ``--out`` removes such leftovers when their process is
gone from this host, and only those. The name, not a file inside, carries the owner, so a folder
swapped out of ``--out`` becomes a leftover of the process that swapped it.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserInputError

__all__ = ["writing", "rewriting", "prepare_out", "commit_out", "REPORT_JSON"]

REPORT_JSON = "report.json"  # every folder rmt-deploy writes has one


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


@contextlib.contextmanager
def rewriting(folder: Path) -> Iterator[Path]:
    """Like ``writing``, for a folder that is updated rather than replaced (``bench --from``): the
    private folder starts as a copy of ``folder`` made of hard links (no data copied where the file
    system allows them), so every file the block does not write stays as it was."""
    with writing(folder) as tmp:
        shutil.copytree(folder, tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
        yield tmp


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
        return _private_folder(out)
    except OSError as e:
        raise UserInputError(f"cannot write to --out {out}: {e.strerror or e}") from None


def commit_out(tmp: Path, out: Path) -> None:
    """Put the finished private folder ``tmp`` at ``out``: ``out`` is at every moment the old
    folder or the new one, never a mix. An existing ``out`` is swapped with ``tmp`` in one
    atomic exchange (Linux), so readers and a SIGKILL see one or the other; the old folder is then
    removed, or, if this process dies first, the next run removes it as its leftover."""
    out = out.expanduser().absolute()
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is a normal folder
    old = tmp  # where the previous folder ends up, removed at the end
    while True:
        if not out.exists():
            try:
                os.replace(tmp, out)
                break
            except OSError as e:  # another run committed first (the folder is there now, not empty)
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        if _exchange(tmp, out):  # the old results now sit at tmp's name: our leftover if we die
            break
        # no atomic exchange here (not Linux, or a file system without it): the old folder is
        # moved aside, then the new one into place; a crash between the two leaves no ``out``
        old = _private_folder(out)
        os.replace(out, old)
    for leftover in {tmp, old}:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where unavailable."""
    import ctypes

    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if rename is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if rename(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_abandoned(out: Path) -> list[Path]:
    """Delete ``.<out>.tmp-*`` folders whose writer has exited on this host; returns them.

    Folders whose name does not say their owner (being created by an older rmt-deploy, or not
    ours), from another host (a shared file system) or from a live process are left alone.
    """
    removed = []
    prefix = f".{out.name}.tmp-"
    for folder in out.parent.glob(f"{glob.escape(prefix)}*"):
        host, _, rest = folder.name[len(prefix):].partition("-")
        pid = rest.partition("-")[0]
        if host == _host() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _private_folder(out: Path) -> Path:
    """A new empty folder beside ``out`` whose name says this host and process own it."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{_host()}-{os.getpid()}-", dir=out.parent))


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
