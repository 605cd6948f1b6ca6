"""rmt-deploy command line. Commands only parse options, call one job, and hand the result to
``Output`` (human tables, JSON, or quiet)."""
from __future__ import annotations

from . import bench, compare, export, info, predict  # noqa: F401 — each module registers its commands on the app
from .app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="rmt-deploy")
