"""Optional backends, imported on first use with the install hint when they are missing."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import BackendUnavailable
from .telemetry import USES_OPENVINO_TELEMETRY, openvino_telemetry_off

__all__ = ["require", "install_hint"]


def require(module: str, extra: str | None) -> ModuleType:
    """Import an optional backend or raise BackendUnavailable with the install hint."""
    if module.split(".")[0] in USES_OPENVINO_TELEMETRY:
        openvino_telemetry_off()
    try:
        return importlib.import_module(module)
    except ImportError as e:
        hint = install_hint(extra) if extra else f"pip install {module}"
        raise BackendUnavailable(f"{module} is not installed or failed to import ({e}); run: {hint}") from None


def install_hint(extra: str) -> str:
    """How to add an extra: rmt-deploy installs from a checkout or a wheel built from one (no registry)."""
    return (f'pip install -c constraints.txt -e ".[{extra}]" in a checkout, or reinstall the wheel as '
            f'"rmt_deploy-<version>-py3-none-any.whl[{extra}]"')
