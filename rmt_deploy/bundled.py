"""The demo checkpoint, images and export presets that make every command work on a fresh machine."""
from __future__ import annotations

from pathlib import Path

__all__ = ["bundled_weights", "bundled_images", "bundled_presets"]

PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_weights() -> Path:
    return PACKAGE_DIR / "assets" / "rmt_demo.safetensors"


def bundled_images(split: str) -> Path:
    """calib/<split> of the source checkout (the package is installed editable)."""
    return PACKAGE_DIR.parent / "calib" / split


def bundled_presets() -> Path:
    """export/ of the source checkout: one TOML file per deployment recipe (``rmt_deploy.jobs.presets``)."""
    return PACKAGE_DIR.parent / "export"
