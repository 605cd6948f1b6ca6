"""Post-training quantization: one NNCF calibration, an INT8 encoding per runtime, FP16.

- ``policy``: what gets quantized and how (the knobs we measured).
- ``calibrate``: NNCF (ONNX backend) → the TensorRT-bound Q/DQ model.
- ``encode``: Q/DQ graph surgery: the ONNX Runtime-bound encoding, reverting layers.
- ``checks``: structural rules each encoding must satisfy.
- ``accuracy_aware``: revert the most sensitive layers until a top-1 budget holds.
- ``fp16``: FP16 weights/activations with FP32 inputs and outputs.
"""
