"""rmt-deploy: RMT vision backbones → ONNX / TensorRT / Core ML / OpenVINO / ExecuTorch with verified numbers.

Use it from Python the way the CLI does::

    import rmt_deploy as rd
    report = rd.export("rmt_s.pth", targets=["onnx", "trt"], int8=True, out="out/")
    model = rd.load("out/model_int8.onnx")
    model.predict(["cat.jpg"], topk=5)

The guide and the reference are in ``docs/`` (a MkDocs site).

Importing this package loads neither torch nor any optional backend (ONNX Runtime, TensorRT,
coremltools, OpenVINO, ExecuTorch); each is imported when first used. Backend telemetry is off by default
(see ``telemetry``); ONNX Runtime's switch must be set before it loads.
"""
from .telemetry import onnxruntime_telemetry_off

onnxruntime_telemetry_off()

from .api import (CheckSummary, CompareResult, Model, Prediction, Report, TapError, bench, check, compare,  # noqa: E402
                  export, load)
from .errors import BackendUnavailable, RmtDeployError, UserInputError, VerificationError  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["export", "load", "bench", "check", "compare", "Report", "Model", "Prediction", "CheckSummary",
           "CompareResult", "TapError", "RmtDeployError",
           "UserInputError", "VerificationError", "BackendUnavailable", "__version__"]
