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
WORK, ASIDE = "tmp", "old"  # private folders: a run's own work, and an old --out moved aside (no exchange)


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
    system allows them), so every file the block does not write stays as it was.

    A folder that cannot be swapped (a mount point, or a parent this user cannot write) is updated
    in place instead, file by file, each file atomically."""
    folder = Path(folder).resolve()
    parent = folder.parent
    if folder.stat().st_dev != parent.stat().st_dev or not os.access(parent, os.W_OK | os.X_OK):
        yield folder
        return
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
    out = out.expanduser().resolve()  # a symlinked --out: its target is what gets replaced
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
    removed, or, if this process dies first, the next run removes it as its leftover. Where no
    atomic exchange exists, the old folder is moved aside first; a crash before the new one is in
    place leaves ``out`` missing, and the next run puts the old one back."""
    out = out.expanduser().resolve()
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
        # no atomic exchange here (a file system without it): the old folder is moved aside, then
        # the new one into place; ``remove_abandoned`` restores an aside folder when ``out`` is missing
        old = _private_folder(out, ASIDE)
        os.replace(out, old)
    for leftover in {tmp, old}:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically: Linux's renameat2(RENAME_EXCHANGE), macOS's renamex_np(RENAME_SWAP);
    False where neither exists or the file system cannot."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if sys.platform == "linux" and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        done = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        done = libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap)
    else:
        return False
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_abandoned(out: Path) -> list[Path]:
    """Delete ``.<out>.tmp-*`` folders whose writer has exited on this host; returns them. An old
    folder a dead run moved aside (``.<out>.old-*``) goes back to ``out`` when ``out`` is missing.

    Folders whose name does not say their owner (being created by an older rmt-deploy, or not
    ours), from another host (a shared file system) or from a live process are left alone.
    """
    removed = []
    for kind in (ASIDE, WORK):
        prefix = f".{out.name}.{kind}-"
        for folder in sorted(out.parent.glob(f"{glob.escape(prefix)}*")):
            host, _, rest = folder.name[len(prefix):].partition("-")
            pid = rest.partition("-")[0]
            if host != _host() or not pid.isdigit() or _alive(int(pid)):
                continue
            if kind == ASIDE and not out.exists():
                os.replace(folder, out)  # the run died between its two renames: the old results return
                continue
            if folder.is_symlink():
                folder.unlink()
            else:
                shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _private_folder(out: Path, kind: str = WORK) -> Path:
    """A new empty folder beside ``out`` whose name says this host and process own it."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{_host()}-{os.getpid()}-", dir=out.parent))


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
