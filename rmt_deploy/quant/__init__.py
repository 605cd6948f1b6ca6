"""Post-training quantization, graph in, graph out: NNCF calibration per weight grid, an INT8
encoding per runtime, FP16.

- ``policy``: what gets quantized and how (the knobs we measured; the 7-bit grid for CPUs).
- ``int8``: the FP32 graph → calibrated Q/DQ graph + the ONNX Runtime encoding.
- ``calibrate``: NNCF (ONNX and OpenVINO backends) with the policy.
- ``encode``: Q/DQ graph surgery: the ONNX Runtime-bound encoding, reverting layers.
- ``checks``: structural rules each encoding must satisfy, the weight grid a graph holds.
- ``openvino_int8``: the same for OpenVINO INT8 models.
- ``accuracy_aware``: revert the most sensitive layers until a top-1 budget holds.
- ``fp16``: FP16 weights/activations with FP32 inputs and outputs.
"""
