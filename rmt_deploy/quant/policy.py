"""The INT8 quantization policy (docs/int8.md): one place for the choices, all measured.

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

__all__ = ["QuantPolicy", "QUANTIZED_OPS", "OPENVINO_QUANTIZED_OPS", "STATISTICS", "WEIGHT_RANGES", "PAIR_SAFE_WEIGHT",
           "EXACT_ON"]

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
# The same layers in an OpenVINO model converted from our ONNX (Conv with groups becomes
# GroupConvolution; Gemm becomes MatMul + Add).
OPENVINO_QUANTIZED_OPS = ("Convolution", "GroupConvolution", "MatMul")
# Activation range estimators: names of NNCF's RangeEstimatorParametersSet presets.
STATISTICS = {"minmax": "MINMAX", "mean-minmax": "MEAN_MINMAX", "quantile": "MEAN_QUANTILE",
              "histogram": "HISTOGRAM"}

# Int8 weight grids. x86 CPUs without VNNI (AVX2-only, AVX-512 without VNNI) multiply u8
# activations by s8 weights in pairs summed into int16 (vpmaddubsw), which saturates once
# 255 * (|w1| + |w2|) > 32767; 7-bit weights (|w| <= 64) can never reach it. VNNI, AMX, ARM
# and GPUs accumulate in int32, so full 8-bit weights are exact there. Depthwise convs keep
# 8-bit weights (NNCF's overflow fix skips them): their int8 kernels widen each product to
# int16 x int16 -> int32, with no pair sums (measured exact on ONNX Runtime and OpenVINO AVX2 paths).
WEIGHT_RANGES = {"portable": 7, "full": 8}
PAIR_SAFE_WEIGHT = 32767 // (2 * 255)  # = 64: the largest |w| no u8 activation pair can saturate
# Where each grid computes what the Q/DQ graph says (reports and artifact metadata).
EXACT_ON = {"portable": "every CPU (x86 with or without VNNI/AMX, ARM) and GPU",
            "full": "GPUs, ARM and x86 with AVX-VNNI/AVX512-VNNI/AMX; wrong on x86 without VNNI"}


@dataclass(frozen=True)
class QuantPolicy:
    statistic: str = "minmax"
    fast_bias_correction: bool = True
    calib_size: int = 256
    weight_range: str = "portable"  # a key of WEIGHT_RANGES

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, not {self.statistic!r}")
        if self.weight_range not in WEIGHT_RANGES:
            raise ValueError(f"weight_range must be one of {', '.join(WEIGHT_RANGES)}, not {self.weight_range!r}")

    @property
    def weight_bits(self) -> int:
        return WEIGHT_RANGES[self.weight_range]

    def to_dict(self) -> dict:
        return {**asdict(self), "weight_bits": self.weight_bits, "exact_on": EXACT_ON[self.weight_range],
                "weights": "int8 symmetric per output channel",
                "activations": "int8 symmetric per tensor", "quantized_ops": list(QUANTIZED_OPS),
                "calibrator": "nncf"}
