"""The demo checkpoint, images and export presets that make every command work on a fresh machine.

They are package data (``rmt_deploy/assets``), found through ``importlib.resources``, so an
installed wheel has them as a source checkout does.
"""
from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from .errors import UserInputError

__all__ = ["bundled_weights", "bundled_images", "bundled_presets", "copy_demo_images", "DEMO_CALIB"]

SPLITS = ("train", "val")
# `--calib demo`: the bundled calibration digits, chosen on purpose (a folder named demo is ./demo).
DEMO_CALIB = "demo"


def _asset(*parts: str) -> Path:
    """A file or folder under ``rmt_deploy/assets`` as a filesystem path.

    Raises:
        UserInputError: the package is not installed as files (a zip import), or the asset is missing.
    """
    path = Path(str(resources.files("rmt_deploy").joinpath("assets", *parts)))
    if not path.exists():
        raise UserInputError(f"bundled {'/'.join(parts)} not found at {path}: the installed package is "
                             "incomplete; reinstall rmt-deploy (a wheel or pip install -e . from a checkout)")
    return path


def bundled_weights() -> Path:
    """The demo checkpoint (rmt-demo, 10 digit classes, 64×64)."""
    return _asset("rmt_demo.safetensors")


def bundled_images(split: str) -> Path:
    """The bundled digit images, ``train`` (calibration) or ``val`` (evaluation), ImageFolder layout."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return _asset("calib", split)


def bundled_presets() -> Path:
    """The shipped export presets: one TOML file per deployment recipe (``rmt_deploy.jobs.presets``)."""
    return _asset("presets")


def copy_demo_images(dest: Path) -> Path:
    """Copy the bundled images (``train/`` and ``val/``, one folder per digit class) into ``dest``,
    which must not exist or be empty; the copy appears whole or not at all.

    Raises:
        UserInputError: ``dest`` is a file or a non-empty folder, or cannot be written.
    """
    from .atomic import atomic_path

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserInputError(f"{dest} exists and is not an empty folder; name a new folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            for split in SPLITS:
                shutil.copytree(bundled_images(split), tmp / split)
    except OSError as e:
        raise UserInputError(f"cannot write {dest}: {e.strerror or e}") from None
    return dest
