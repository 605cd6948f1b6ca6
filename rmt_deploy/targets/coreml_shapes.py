"""Core ML flexible input shapes for a dynamic deploy form (``export --dynamic``).

Core ML offers two kinds: enumerated shapes (a fixed list) and ranges. We enumerate the sizes
export verifies — the range's corners, one non-square size and ``--img-size`` — because the
Neural Engine runs enumerated shapes but sends range-shaped models to the CPU/GPU, and because
every shape in the package is then a shape we checked against PyTorch.

In an FP16 program the decay and rotary tables are built from the input's size (Shape, Range,
Mul, Sin, …): those ops stay FP32, since positions above 2048 have no exact FP16 value and a
phase like 4095 × 1.0 would be off by a whole radian.
"""
from __future__ import annotations

__all__ = ["input_shape", "fp16_except_tables"]


def input_shape(ct, sizes: list[tuple[int, int]], default: tuple[int, int]):
    """The input's shape: one fixed shape, or enumerated (1, 3, H, W) for several sizes."""
    if len(sizes) <= 1:
        return (1, 3, *default)
    return ct.EnumeratedShapes(shapes=[(1, 3, h, w) for h, w in sizes], default=(1, 3, *default))


def fp16_except_tables(ct):
    """FP16 compute for every op except those computed from the input's size alone."""
    size_only: dict[str, bool] = {}

    def from_size_only(op) -> bool:
        if op.name not in size_only:
            runtime = [var for var in op.get_flattened_inputs() if var.val is None]
            # a function input has no producing op: whatever reads it reads pixel values
            size_only[op.name] = op.op_type == "shape" or (
                bool(runtime) and all(var.op is not None and from_size_only(var.op) for var in runtime))
        return size_only[op.name]

    return ct.transform.FP16ComputePrecision(op_selector=lambda op: not from_size_only(op))
