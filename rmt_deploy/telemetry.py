"""rmt-deploy makes no network calls, including through the backends it drives.

Three of them send usage statistics by default when nobody has chosen otherwise:

- ONNX Runtime (1.29 and later, Linux and macOS too): events to Microsoft, a device id under
  ~/.cache. Its own opt-out is ``ORT_DISABLE_TELEMETRY=1``, read once at initialisation.
- OpenVINO's converter (behind ``openvino.convert_model``) and NNCF: events to Google
  Analytics through the openvino-telemetry package, each from a worker thread that forks a
  sender process. Offline that is a DNS lookup per event, and a fork while numpy's BLAS
  threads are busy in the main thread can deadlock the process (reproduced here:
  ``convert_model`` followed by numpy matmuls hung for good).

A build tool in an air-gapped CI must do neither, so rmt-deploy turns the default off for its
own process. An explicit choice is kept: ``ORT_DISABLE_TELEMETRY=0`` in the environment, or an
``opt_in_out --opt_in`` consent file for openvino-telemetry.
"""
from __future__ import annotations

import os

__all__ = ["onnxruntime_telemetry_off", "openvino_telemetry_off", "USES_OPENVINO_TELEMETRY"]

# Backends that report through openvino-telemetry. NNCF settles consent when it is imported,
# so the switch must come first.
USES_OPENVINO_TELEMETRY = ("nncf", "openvino")


def onnxruntime_telemetry_off() -> None:
    """Unless the user set it, ask ONNX Runtime for no telemetry (before it is imported)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def openvino_telemetry_off() -> None:
    """Make openvino-telemetry's consent check answer "declined" where the user never chose."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return  # no sender installed, nothing can be sent
    check = OptInChecker.check
    if getattr(check, "rmt_deploy", False):
        return

    def check_default_declined(self, *args, **kwargs):
        result = check(self, *args, **kwargs)
        return ConsentCheckResult.DECLINED if result == ConsentCheckResult.NO_FILE else result

    check_default_declined.rmt_deploy = True
    OptInChecker.check = check_default_declined
