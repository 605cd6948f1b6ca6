"""The large position tables OpenVINO's converter folds into constants, rebuilt from small ones.

Keeps an IR's .bin as small as the ONNX it came from (``openvino.save``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["unfold_position_tables"]


def unfold_position_tables(model, min_bytes: int) -> int:
    """Rebuild the large position tables OpenVINO's converter folds, in place; returns how many.

    The deploy form builds them in the graph from small tables (``rewrite.deploy``): the
    (heads, h*w, h*w) decay from per-axis tables, the (h, w, C) rotary tables from one head's.
    The converter folds both into constants (the decay alone is 564 MB for RMT-T at 800x1344).
    A constant of at least ``min_bytes`` that is exactly such a sum or repetition is replaced by
    ``Add(rows, cols) → Reshape`` or ``Tile``; the runtime builds it again at load.
    """
    from openvino import opset13 as ops

    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_byte_size() < min_bytes:
            continue
        shape = list(node.get_output_shape(0))
        if len(shape) < 3:
            continue
        value = node.get_data()
        tables = _axis_tables(value) if len(shape) == 3 and shape[1] == shape[2] else None
        if tables is not None:
            built = ops.reshape(ops.add(ops.constant(tables[0]), ops.constant(tables[1])),
                                ops.constant(np.asarray(shape, np.int64)), special_zero=False)
        else:
            period = _channel_period(value)
            if period is None:
                continue
            repeats = [1] * (len(shape) - 1) + [shape[-1] // period]
            built = ops.tile(ops.constant(np.ascontiguousarray(value[..., :period])),
                             ops.constant(np.asarray(repeats, np.int64)))
        node.output(0).replace(built.output(0))
        count += 1
    return count


def _axis_tables(value: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows (n, h, 1, h, 1), cols (n, 1, w, 1, w)) whose sum is ``value`` (n, h*w, h*w) exactly, or None.

    Row 0 of head 0 is gamma * (i' + j') over flat positions i'*w + j': it grows along the first
    row and drops back at position w, which gives w.
    """
    n, tokens = value.shape[0], value.shape[1]
    first = np.abs(value[0, 0])
    drops = np.nonzero(first[2:] < first[1:-1])[0]
    w = int(drops[0]) + 2 if len(drops) else tokens
    if tokens % w:
        return None
    grid = value.reshape(n, tokens // w, w, tokens // w, w)
    rows = np.ascontiguousarray(grid[:, :, 0, :, 0])[:, :, None, :, None]  # |dj| = 0: gamma * |di|
    cols = np.ascontiguousarray(grid[:, 0, :, 0, :])[:, None, :, None, :]
    return (rows, cols) if np.array_equal(rows + cols, grid) else None


def _channel_period(value: np.ndarray) -> int | None:
    """The shortest p < C such that ``value`` (…, C) is its first p channels repeated, or None."""
    channels = value.shape[-1]
    for p in range(1, channels // 2 + 1):
        if channels % p == 0 and np.array_equal(value[..., :p], value[..., p:2 * p]) \
                and np.array_equal(np.tile(value[..., :p], (1,) * (value.ndim - 1) + (channels // p,)), value):
            return p
    return None
