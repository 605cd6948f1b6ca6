"""INT8 by PyTorch's PT2E flow, under our policy, and the edits the accuracy-aware search makes to it:
for ExecuTorch with XNNPACK's quantizer (``targets.executorch`` lowers the result) and for LiteRT with
litert-torch's (``targets.litert`` converts it). Both runtimes run the int8 layers on XNNPACK's kernels.

Policy: only what feeds a conv or a linear is quantized (their inputs and per-channel weights), as for
the other targets; attention matmuls, softmax, LayerNorm, GELU and the residual adds stay float.
XNNPACK's quantizer also observes each layer's output, and carries that through the data-movement
ops after it: its int8 kernels write int8.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..quiet import quiet

__all__ = ["WEIGHT_RANGE", "EXACT_ON", "STATISTICS", "QUANTIZERS", "example_input", "calibrate", "convert", "quantize",
           "policy_quantizer", "copy_graph", "quantized_layers", "revert_layers", "max_abs_weight"]

WEIGHT_RANGE = 127  # symmetric int8 weights never reach -128 (Arm's plain-NEON fallback relies on it)
# Where XNNPACK's int8 GEMMs compute what the quantized graph says: every kernel family sums int8
# products in int32 without intermediate saturation (x86 AVX2 widens to int16 and multiplies with
# vpmaddwd; VNNI/AMX, Arm dotprod/i8mm accumulate in int32; plain NEON widens to int16).
EXACT_ON = "every CPU XNNPACK runs on (x86 with or without VNNI, Arm); weights in [-127, 127]"
STATISTICS = {"minmax": "MinMaxObserver", "histogram": "HistogramObserver"}  # --statistic → PT2E observer
QUANTIZERS = ("xnnpack", "litert-torch")  # whose PT2E quantizer annotates the graph: ExecuTorch's or litert-torch's


def example_input(shape: tuple[int, ...]):
    """The zeros ``torch.export`` traces with."""
    import torch

    return (torch.zeros(*shape),)


def quantize(module, shape: tuple[int, ...], calib: np.ndarray, statistic: str = "minmax", progress=None):
    """``module`` with INT8 conv and linear layers (PT2E, XNNPACK quantizer) for input ``shape``,
    calibrated one sample of ``calib`` at a time; returns the converted graph module (quantize and
    dequantize ops in the graph)."""
    return convert(calibrate(module, shape, calib, statistic, progress))


def convert(calibrated, fold_weights: bool = True):
    """The quantized graph module of a calibrated one (which is not changed). ``fold_weights=False``
    keeps each weight's quantize op in the graph, which litert-torch's converter reads."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with quiet():
        return convert_pt2e(copy_graph(calibrated), fold_quantize=fold_weights)


def copy_graph(graph_module):
    import copy

    with quiet():  # deep-copying a graph module warns about torch's own pytree internals
        return copy.deepcopy(graph_module)


def calibrate(module, shape: tuple[int, ...], calib: np.ndarray, statistic: str = "minmax", progress=None,
              quantizer: str = "xnnpack"):
    """``module`` exported for input ``shape`` with observers on the inputs, weights and outputs of its
    conv and linear layers, run on ``calib``: ``convert`` makes it INT8; ``revert_layers`` first keeps some float.
    The observers see float values whatever is reverted later, so one calibration serves every candidate.
    ``quantizer`` (one of ``QUANTIZERS``) is the runtime's own PT2E quantizer, limited to our policy."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    with torch.no_grad():
        graph = torch.export.export(module.eval(), example_input(shape)).module()
        prepared = prepare_pt2e(graph, policy_quantizer(quantizer, statistic))
        bar = progress.bar(f"Calibrating {_TITLES[quantizer]} INT8 (PT2E) on {len(calib)} images", len(calib)) \
            if progress else contextlib.nullcontext(lambda n=1: None)
        with bar as advance:
            for image in calib:
                prepared(torch.from_numpy(np.ascontiguousarray(image[None])))
                advance(1)
        return prepared


_TITLES = {"xnnpack": "ExecuTorch", "litert-torch": "LiteRT"}


def policy_quantizer(quantizer: str, statistic: str):
    """The runtime's PT2E quantizer annotating only conv and linear layers: per-channel symmetric
    weights in [-WEIGHT_RANGE, WEIGHT_RANGE], per-tensor activations observed by ``statistic``."""
    import dataclasses

    from torchao.quantization.pt2e import observer

    act_observer = getattr(observer, STATISTICS[statistic]).with_args(eps=2 ** -12)
    if quantizer == "litert-torch":
        from litert_torch.quantize import pt2e_quantizer as lq

        class LiteRTLayerQuantizer(lq.PT2EQuantizer):
            STATIC_OPS = ["linear", "conv"]

        config = lq.get_symmetric_quantization_config(is_per_channel=True)  # weights already in [-127, 127]
        act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=act_observer)
        return LiteRTLayerQuantizer().set_global(dataclasses.replace(config, input_activation=act,
                                                                     output_activation=act))
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xq
    from torchao.quantization.pt2e.quantizer import QuantizationConfig

    class LayerQuantizer(xq.XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in xq.XNNPACKQuantizer.SUPPORTED_PATTERNS if p.name in ("linear", "conv")]

    config = xq.get_symmetric_quantization_config(is_per_channel=True, weight_qmin=-WEIGHT_RANGE,
                                                  weight_qmax=WEIGHT_RANGE)
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=act_observer)
    return LayerQuantizer().set_global(QuantizationConfig(act, act, config.weight, config.bias, config.is_qat))


def _observed_layers(calibrated) -> dict[str, object]:
    """Quantized conv/linear nodes of a calibrated graph by layer name (their weight's module path)."""
    return {node.args[1].args[0].target.removesuffix(".weight"): node for node in calibrated.graph.nodes
            if _is_quantized_layer(calibrated, node) and node.args[1].args[0].op == "get_attr"}


def _is_quantized_layer(graph_module, node) -> bool:
    import torch

    return (node.op == "call_function" and node.target in (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default)
            and _is_observer(graph_module, node.args[1]))


def _is_observer(graph_module, node) -> bool:
    from torchao.quantization.pt2e.observer import ObserverBase

    return node.op == "call_module" and isinstance(graph_module.get_submodule(node.target), ObserverBase)


def _float_output(graph_module, node) -> None:
    """Bypass the observers on ``node``'s output and along the chain of data-movement ops the quantizer
    propagated them through, except where an int8 layer reads the value."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for observer in [user for user in current.users if _is_observer(graph_module, user)]:
            for consumer in list(observer.users):
                if not _is_quantized_layer(graph_module, consumer):
                    consumer.replace_input_with(observer, current)
                    if any(_is_observer(graph_module, user) for user in consumer.users):  # propagated further
                        stack.append(consumer)


def quantized_layers(calibrated) -> list[str]:
    return list(_observed_layers(calibrated))


def revert_layers(calibrated, names: list[str]) -> list[str]:
    """Keep ``names`` float in ``calibrated`` (in place): their weight, input and output bypass the
    observers, and so do the values computed from that output by ops the quantizer carried the output's
    int8 through (permutes, reshapes, slices: XNNPACK's int8 kernels write int8, so the quantizer
    observes a layer's output and propagates it). ``convert`` then leaves them unquantized and XNNPACK
    runs them in FP32. A value passed between a float and an int8 layer stays quantized where the int8
    one needs it. Returns the names reverted."""
    layers, done = _observed_layers(calibrated), []
    for name in names:
        node = layers.get(name)
        if node is None:
            continue
        source, weight = node.args[0], node.args[1]
        keep_input = not _is_observer(calibrated, source) or _is_quantized_layer(calibrated, source.args[0])
        node.args = (source if keep_input else source.args[0], weight.args[0], *node.args[2:])
        _float_output(calibrated, node)
        done.append(name)
    for node in reversed(list(calibrated.graph.nodes)):
        if _is_observer(calibrated, node) and not node.users:
            calibrated.graph.erase_node(node)
    calibrated.recompile()
    return done


def max_abs_weight(graph_module) -> int:
    """The largest |w| over the int8 weights of a converted PT2E graph."""
    import functools

    import torch

    values = [functools.reduce(getattr, node.target.split("."), graph_module)
              for node in graph_module.graph.nodes if node.op == "get_attr"]
    values += list(graph_module.state_dict().values())
    return int(max((int(t.abs().max()) for t in values if isinstance(t, torch.Tensor) and t.dtype == torch.int8),
                   default=0))
