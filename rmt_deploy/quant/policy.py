"""The INT8 quantization policy (DESIGN §5): one place for the choices, all measured.

Weights are int8 per output channel, activations int8 per tensor, symmetric, zero point 0
(what TensorRT's explicit quantization accepts). Only the inputs of Conv, Gemm and MatMul
(both attention matmuls included) are quantized; LayerNorm, Softmax, the decay add and GELU
stay in float. NNCF's TRANSFORMER model type is not used: it skips the softmax @ v matmul,
puts per-channel quantizers on activations and adds SmoothQuant multiplies (measured 0.5x
of FP32 speed on ONNX Runtime); ignoring every other op type gives exactly the placement
above.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["QuantPolicy", "QUANTIZED_OPS", "OPENVINO_QUANTIZED_OPS", "STATISTICS"]

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
# The same layers in an OpenVINO model converted from our ONNX (Conv with groups becomes
# GroupConvolution; Gemm becomes MatMul + Add).
OPENVINO_QUANTIZED_OPS = ("Convolution", "GroupConvolution", "MatMul")
# Activation range estimators: names of NNCF's RangeEstimatorParametersSet presets.
STATISTICS = {"minmax": "MINMAX", "mean-minmax": "MEAN_MINMAX", "quantile": "MEAN_QUANTILE",
              "histogram": "HISTOGRAM"}


@dataclass(frozen=True)
class QuantPolicy:
    statistic: str = "minmax"
    fast_bias_correction: bool = True
    calib_size: int = 256

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, not {self.statistic!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "weights": "int8 symmetric per output channel",
                "activations": "int8 symmetric per tensor", "quantized_ops": list(QUANTIZED_OPS),
                "calibrator": "nncf"}
