"""`rmt-deploy doctor`: which backends are installed and usable here, and why not."""
from __future__ import annotations

import importlib
import importlib.metadata
import platform

from ..bundled import bundled_images, bundled_presets, bundled_weights
from ..cpu import cpu_features, cpu_name
from ..errors import UserInputError
from ..optional import install_hint
from ..quiet import native_quiet, quiet
from ..targets import TARGETS
from ..targets import packages as table_packages

__all__ = ["diagnose"]

def _component(module: str, dist: str) -> tuple[str, str]:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing", "not installed"
    try:
        with quiet(module), native_quiet():  # coremltools logs missing macOS libraries, MNN prints a banner
            importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 — a broken install must be reported, not crash doctor
        return "broken", f"{version} installed but import fails: {str(e).splitlines()[0][:120]}"
    return "ok", version


def diagnose() -> dict:
    """Rows for packages and targets, plus the machine facts that matter for deployment."""
    packages = []
    for package in table_packages():
        status, detail = _component(package.module, package.dist)
        hint = install_hint(package.extra) if status != "ok" and package.extra else None
        packages.append({"package": package.dist, "status": status, "detail": detail, "purpose": package.purpose,
                         "install": hint})
    targets = []
    for target in TARGETS.values():
        reason = target.unavailable_reason()
        try:
            runtimes = [] if reason else target.runtimes()
        except Exception as e:  # noqa: BLE001 — a broken runtime is what doctor is for
            reason = f"installed, but listing its runtimes fails: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
            runtimes = []
        detail = reason or (f"precisions: {', '.join(target.precisions)}; runs here on: "
                            + (", ".join(runtimes) or f"nothing ({target.no_runtime_reason()})"))
        targets.append({"target": target.name, "status": "ok" if reason is None else "unavailable", "detail": detail,
                        "runtimes": runtimes})
    machine = {"cpu": cpu_name(), "platform": platform.platform(), "cpu_features": cpu_features().to_dict()}
    for target in TARGETS.values():
        machine.update(target.machine_facts())
    return {
        "machine": machine,
        "packages": packages,
        "targets": targets,
        "bundled": {
            "demo_checkpoint": _bundled(bundled_weights),
            "calibration_images": _bundled(bundled_images, "train"),
            "evaluation_images": _bundled(bundled_images, "val"),
            "presets": _bundled(bundled_presets),
        },
    }


def _bundled(find, *args) -> str | None:
    """Where a bundled asset is, or None when the installed package lacks it."""
    try:
        return str(find(*args))
    except UserInputError:
        return None
