"""rmt-deploy: RMT vision backbones → ONNX / TensorRT / CoreML / OpenVINO with verified numbers.

Importing this package loads no optional backend (ONNX Runtime, TensorRT, coremltools,
OpenVINO); each target module imports its backend when it is used. Backend telemetry is
off by default (see ``telemetry``); ONNX Runtime's switch must be set before it loads.
"""
from .telemetry import onnxruntime_telemetry_off

onnxruntime_telemetry_off()

__version__ = "0.2.0"
