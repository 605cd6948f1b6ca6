"""Run a Core ML ML program with numpy: the stand-in for ``predict`` where Core ML cannot run.

Each op is computed in float32 and its result rounded to the op's declared dtype, i.e. FP16
storage with FP32 accumulation, close to what Core ML's GPU and Neural Engine do. Ops use
coremltools' own Python reference implementations (``value_inference``); the few without
one, or with one too slow for whole images (per-element ``gelu``), are written here.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["load_program", "evaluate", "tap_map", "UnsupportedOp"]


class UnsupportedOp(RuntimeError):
    """The program holds an op this evaluator has no implementation for."""


def load_program(path):
    """The MIL program of a saved .mlpackage, read without Core ML (works on Linux)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    return load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)


def evaluate(function, feeds: dict[str, np.ndarray], keep: list[str] = ()) -> dict[str, np.ndarray]:
    """Outputs of ``function`` (a MIL Function, e.g. ``program.functions["main"]``) for ``feeds``,
    and the intermediate values named in ``keep``. Other values are dropped after their last use: kept
    all, RMT-T's at 800x1344 outgrew 24 GiB."""
    values: dict[str, np.ndarray] = {}
    for name, var in function.inputs.items():
        if name not in feeds:
            raise KeyError(f"missing input {name!r}; the program takes {list(function.inputs)}")
        values[var.name] = _round_to(var.dtype, np.asarray(feeds[name], dtype=np.float32))
    operations = list(function.operations)
    last_use = {var.name: i for i, op in enumerate(operations) for var in op.get_flattened_inputs()}
    held = {var.name for var in function.outputs} | set(keep)
    for i, op in enumerate(operations):
        results = _run(op, values)
        for var, value in zip(op.outputs, results):
            values[var.name] = _round_to(var.dtype, value)
        for var in op.get_flattened_inputs():
            if last_use[var.name] == i and var.name not in held:
                values.pop(var.name, None)
    out = {var.name: values[var.name] for var in function.outputs}
    out.update({name: values[name] for name in keep if name in values})
    return out


def tap_map(program, cfg) -> dict[str, str]:
    """The tap map (``rewrite.taps``) of a freshly converted program, from the TorchScript module
    scopes coremltools attaches to each op (the saved package keeps op names but not scopes)."""
    if cfg is None:
        return {}
    from coremltools.converters.mil.mil.scope import ScopeSource

    from ..rewrite.taps import TAPS_KEY, GraphOp, all_taps, encode_taps, scope_outputs

    function = program.functions["main"]
    ops = []
    for op in function.operations:
        if op.op_type == "const":
            continue
        kinds = op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_TYPE, [])
        names = op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, [])
        path = []
        for kind, name in list(zip(kinds, names))[:-1]:  # the last entry is the op itself
            if kind == "DeployRMT":
                continue  # a wrapper (image input) around the deploy form
            path.append({"DeployStage": f"stages.{name}", "DeployBlock": f"blocks.{name}"}.get(kind, name))
        inputs = tuple(v.name for v in op.get_flattened_inputs() if v.op is None or v.op.op_type != "const")
        ops.append(GraphOp(".".join(path), op.op_type, inputs, tuple(v.name for v in op.outputs)))
    present = {name for op in ops for name in op.outputs}
    found = scope_outputs(ops, [v.name for v in function.outputs], all_taps(cfg))
    return {TAPS_KEY: encode_taps(found, present)}


def _round_to(dtype, value):
    """Store like the device would: fp16 values rounded, then held as float32 for the next op."""
    from coremltools.converters.mil.mil import types

    if not isinstance(value, np.ndarray | np.generic):
        return value
    if dtype == types.fp16:
        return np.asarray(value, dtype=np.float16).astype(np.float32)
    if dtype == types.fp32:
        return np.asarray(value, dtype=np.float32)
    return value


def _run(op, values: dict) -> tuple:
    if op.op_type.startswith("constexpr_"):
        return (op.materialized_val_inference(),)
    if all(out.val is not None for out in op.outputs):  # const, or folded at conversion
        return tuple(out.val for out in op.outputs)
    own = _OWN.get(op.op_type)
    if own is not None:
        return own(op, lambda name: _value(op.inputs[name], values) if name in op.inputs else None)
    if "value_inference" not in _defining_attrs(type(op)):
        raise UnsupportedOp(f"no numpy implementation for Core ML op '{op.op_type}'")
    bound = _bind(op, values)
    try:
        result = op.value_inference()
    finally:
        for var, declared, value in bound:
            var._sym_type, var._sym_val = declared, value
    return result if isinstance(result, tuple) else (result,)


def _defining_attrs(cls) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__name__ == "Operation":
            break
        names.update(klass.__dict__)
    return names


def _value(var, values: dict):
    if var.val is not None:
        return var.val
    return values[var.name]


def _bind(op, values: dict) -> list:
    """Give each runtime input a value so coremltools' ``value_inference`` can read ``.val``.

    The value goes into a tensor type of its own concrete shape — a flexible-shape program
    declares symbolic dims, which the reference code reads from the type — and float values
    into a float32 type, so the reference computes in float32 whatever the declared dtype
    (rounding happens afterwards). Returns (var, declared type, declared value) to restore.
    """
    from coremltools.converters.mil.mil import types

    bound = []
    for var in op.get_flattened_inputs():
        if var.val is not None:
            continue
        value = np.asarray(values[var.name])
        scalar = types.tensor(var.dtype, (1,)).get_primitive() if value.ndim == 0 else None
        element = types.fp32 if value.dtype == np.float32 else var.dtype
        holder_type = scalar if scalar is not None else types.tensor(element, value.shape)
        holder = holder_type()
        holder.val = value[()] if value.ndim == 0 else value
        bound.append((var, var._sym_type, var._sym_val))
        var._sym_type, var._sym_val = holder_type, holder
    return bound


# ----- ops written here ---------------------------------------------------------------------

def _conv(op, get) -> tuple:
    x, w, b = get("x"), get("weight"), get("bias")
    groups = int(get("groups")) if get("groups") is not None else 1
    strides = tuple(get("strides")) if get("strides") is not None else (1, 1)
    dilations = tuple(get("dilations")) if get("dilations") is not None else (1, 1)
    if x.ndim != 4:
        raise UnsupportedOp(f"conv '{op.name}': only 2-D convolution is implemented (input rank {x.ndim})")
    pad = _conv_padding(op, get, w.shape[2:], strides, dilations, x.shape[2:])
    x = np.pad(x.astype(np.float32), ((0, 0), (0, 0), pad[0], pad[1]))
    n, c, _, _ = x.shape
    out_c, c_per_group, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    windows = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # n, c, ho, wo, kh, kw
    ho, wo = windows.shape[2:4]
    w = w.astype(np.float32)
    if groups == c and c_per_group == 1 and out_c == c:  # depthwise: one filter per channel
        y = np.einsum("nchwij,cij->nchw", windows, w[:, 0])
    else:
        out_per_group = out_c // groups
        parts = []
        for g in range(groups):
            patch = windows[:, g * c_per_group:(g + 1) * c_per_group]
            cols = patch.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c_per_group * kh * kw)
            kernel = w[g * out_per_group:(g + 1) * out_per_group].reshape(out_per_group, -1)
            parts.append((cols @ kernel.T).reshape(n, ho, wo, out_per_group).transpose(0, 3, 1, 2))
        y = np.concatenate(parts, axis=1)
    if b is not None:
        y = y + b.astype(np.float32).reshape(1, -1, 1, 1)
    return (y,)


def _conv_padding(op, get, kernel, strides, dilations, spatial) -> tuple:
    pad_type = str(get("pad_type")) if get("pad_type") is not None else "valid"
    if pad_type == "custom":
        p = [int(v) for v in get("pad")]
        return (p[0], p[1]), (p[2], p[3])
    if pad_type == "valid":
        return (0, 0), (0, 0)
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads.append((big, small) if pad_type == "same_lower" else (small, big))
        return tuple(pads)
    raise UnsupportedOp(f"conv '{op.name}': pad_type {pad_type!r} is not implemented")


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def _gelu(op, get) -> tuple:
    x, mode = get("x").astype(np.float32), str(get("mode") or "EXACT")
    if mode == "EXACT":
        return (0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),)
    if mode == "TANH_APPROXIMATION":
        return (0.5 * x * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),)
    return (x / (1.0 + np.exp(-1.702 * x)),)


def _silu(op, get) -> tuple:
    x = get("x").astype(np.float32)
    return (x * 0.5 * (1.0 + np.tanh(0.5 * x)),)  # x·sigmoid(x) without exp overflow


def _layer_norm(op, get) -> tuple:
    x, axes = get("x").astype(np.float32), tuple(int(a) for a in get("axes"))
    eps = float(get("epsilon")) if get("epsilon") is not None else 1e-5
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if get("gamma") is not None:
        y = y * get("gamma").astype(np.float32)
    if get("beta") is not None:
        y = y + get("beta").astype(np.float32)
    return (y,)


def _reduce(fn: Callable) -> Callable:
    # coremltools' reference passes keep_dims as numpy.bool, which numpy 2 rejects.
    def run(op, get) -> tuple:
        axes = get("axes")
        axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        keep = bool(get("keep_dims")) if get("keep_dims") is not None else False
        return (fn(get("x").astype(np.float32), axis=axes, keepdims=keep),)
    return run


def _cast(op, get) -> tuple:
    from coremltools.converters.mil.mil import types

    target = types.nptype_from_builtin(op.outputs[0].dtype)
    return (np.asarray(get("x")).astype(target),)


def _shape(op, get) -> tuple:
    return (np.array(np.shape(get("x")), dtype=np.int32),)


_OWN: dict[str, Callable] = {"shape": _shape, "conv": _conv, "gelu": _gelu, "silu": _silu, "layer_norm": _layer_norm, "cast": _cast,
                         "reduce_mean": _reduce(np.mean), "reduce_sum": _reduce(np.sum),
                         "reduce_max": _reduce(np.max), "reduce_min": _reduce(np.min)}
