"""rmt-deploy: RMT vision backbones → ONNX / TensorRT / CoreML / OpenVINO with verified numbers.

Importing this package loads no optional backend (ONNX Runtime, TensorRT, coremltools,
OpenVINO); each target module imports its backend when it is used.
"""
__version__ = "0.1.0"
