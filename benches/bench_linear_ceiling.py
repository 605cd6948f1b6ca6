"""How far INT8 linear layers alone can take RMT on this CPU: the ceiling behind the INT8 targets.

    python benches/bench_linear_ceiling.py [--arch rmt-t] [--size 224] [--threads 2] [--rounds 40] [--calib 64]

INT8 speeds up the linear layers (the GEMMs); the rest of the network (attention, LayerNorm,
transposes, GELU, residual adds) does the same work in either precision. This script measures
both parts in one process, interleaved (A B C … A B C …):

- "linear layers": every nn.Linear of the deploy form, with its real shape (tokens x in x out)
  and weights, chained stage by stage into graphs that contain nothing else but a per-channel
  Mul after each layer (a stand-in for the float op that follows every linear in the model, so
  an int8 layer returns float and the next one quantizes again, as in the real INT8 graphs).
  FP32 and Q/DQ INT8 (per-channel weights, per-tensor activations scaled from a float run),
  run by ONNX Runtime and by OpenVINO (FP16 IR = the device default, bf16 on AMX; INT8).
- "whole model": the FP32 deploy form (ONNX Runtime), the FP16 IR (OpenVINO default) and the
  real INT8 exports of both runtimes (NNCF on --calib bundled images).

It prints the share of time the linear layers take, the whole-model ratio INT8 could reach if
only the linear layers changed (whole / (whole - linear_float + linear_int8)), and how fast the
non-linear part would have to run for each target: in the INT8 model alone, or in both models
(a restructuring that speeds up float and INT8 alike only helps the ratio as that part shrinks
towards nothing). Read the ratios, not absolute times. Weights are random (speed ignores them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from common import Bench, bench_setup, calibration_samples, export_deploy_fp32, interleaved_medians, random_input
from onnx import TensorProto, helper, numpy_helper

from rmt_deploy.quant.calibrate import quantize_openvino
from rmt_deploy.quant.encode import for_onnxruntime
from rmt_deploy.quant.int8 import calibrate_int8
from rmt_deploy.quant.policy import QuantPolicy
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import onnx as onnx_target
from rmt_deploy.targets import openvino as ov_target

ONNX_OPSET, ONNX_IR = 17, 9


def linear_layers(deploy: torch.nn.Module, size: tuple[int, int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(tokens, weight (out, in), bias) of every nn.Linear, in call order, for one batch-1 image."""
    calls = []

    def hook(module, inputs, _output):
        x = inputs[0]
        calls.append((x.numel() // x.shape[-1], module.weight.detach().numpy(), module.bias.detach().numpy()))

    handles = [m.register_forward_hook(hook) for m in deploy.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        deploy(torch.zeros(1, 3, *size))
    for h in handles:
        h.remove()
    return calls


def chains(layers) -> list[list]:
    """Consecutive layers that can feed each other (same tokens, out == next in)."""
    out: list[list] = []
    for layer in layers:
        tokens, weight, _ = layer
        prev = out[-1][-1] if out else None
        if prev is not None and prev[0] == tokens and prev[1].shape[0] == weight.shape[1]:
            out[-1].append(layer)
        else:
            out.append([layer])
    return out


def chain_graph(chain, int8: bool) -> onnx.ModelProto:
    """Linear → Mul(per-channel) → Linear → … as FP32, or with Q/DQ in front of every layer."""
    tokens = chain[0][0]
    rng = np.random.default_rng(0)  # the Mul constants: the same in both precisions
    nodes, inits = [], []
    x = np.random.default_rng(1).standard_normal((tokens, chain[0][1].shape[1])).astype(np.float32)
    name = "x"
    for i, (_, weight, bias) in enumerate(chain):
        w = weight.T.astype(np.float32)  # (in, out) for Gemm
        scale = rng.uniform(0.5, 1.5, w.shape[1]).astype(np.float32)
        gemm_in, w_name, b_name = name, f"w{i}", f"b{i}"
        if int8:
            a_scale = np.float32(np.abs(x).max() / 127)
            w_scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
            inits += [numpy_helper.from_array(np.array(a_scale), f"as{i}"),
                      numpy_helper.from_array(np.array(0, np.int8), f"az{i}"),
                      numpy_helper.from_array(np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), f"wq{i}"),
                      numpy_helper.from_array(w_scale, f"ws{i}"),
                      numpy_helper.from_array(np.zeros_like(w_scale, np.int8), f"wz{i}")]
            nodes += [helper.make_node("QuantizeLinear", [name, f"as{i}", f"az{i}"], [f"q{i}"], name=f"q{i}"),
                      helper.make_node("DequantizeLinear", [f"q{i}", f"as{i}", f"az{i}"], [f"dq{i}"], name=f"dq{i}"),
                      helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}", f"wz{i}"], [w_name], name=f"dqw{i}",
                                       axis=1)]
            gemm_in = f"dq{i}"
        else:
            inits.append(numpy_helper.from_array(w, w_name))
        inits += [numpy_helper.from_array(bias.astype(np.float32), b_name),
                  numpy_helper.from_array(scale, f"m{i}")]
        nodes += [helper.make_node("Gemm", [gemm_in, w_name, b_name], [f"g{i}"], name=f"linear{i}"),
                  helper.make_node("Mul", [f"g{i}", f"m{i}"], [f"y{i}"], name=f"mul{i}")]
        x = (x @ w + bias) * scale  # float run: the next layer's activation range
        name = f"y{i}"
    graph = helper.make_graph(
        nodes, "linear_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [tokens, chain[0][1].shape[1]])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [tokens, chain[-1][1].shape[0]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR)


def _chain_runners(chain_list, work: Path, threads: int) -> dict[str, dict]:
    """Per chain, by a label naming it: runners (ort fp32, ort int8, ov bf16, ov int8) and its input."""
    out = {}
    for c, chain in enumerate(chain_list):
        paths = {name: work / f"chain{c}_{name}.onnx" for name in ("fp32", "int8", "int8_ort")}
        onnx.save(chain_graph(chain, False), str(paths["fp32"]))
        qdq = chain_graph(chain, True)
        onnx.save(qdq, str(paths["int8"]))  # int8 zero point 0, as NNCF writes it: OpenVINO reads this
        for_onnxruntime(qdq)  # what the ONNX INT8 export ships: uint8 zp 128 activations, int32 biases
        onnx.save(qdq, str(paths["int8_ort"]))
        ov_fp16 = ov_target.save(ov_target.convert(paths["fp32"]), work / f"chain{c}_fp16.xml", {"precision": "fp16"})
        ov_int8 = ov_target.save(ov_target.convert(paths["int8"]), work / f"chain{c}_int8.xml", {"precision": "int8"})
        runners = {"ort fp32": onnx_target.OnnxRuntimeRunner(paths["fp32"], threads),
                   "ort int8": onnx_target.OnnxRuntimeRunner(paths["int8_ort"], threads),
                   "ov bf16": ov_target.OpenVINORunner(ov_fp16, threads),
                   "ov int8": ov_target.OpenVINORunner(ov_int8, threads)}
        x = np.random.default_rng(c).standard_normal((chain[0][0], chain[0][1].shape[1])).astype(np.float32)
        label = f"{len(chain):2d} linears, {chain[0][0]} tokens, {chain[0][1].shape[1]} in"
        out[label] = {"runners": runners, "x": x}
    return out


def _whole_runners(bench: Bench) -> dict:
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    deploy_onnx = export_deploy_fp32(bench, work / "fp32.onnx", encoding="onnxruntime")
    samples = calibration_samples(args.calib, size)
    ort_int8 = work / "int8_ort.onnx"
    onnx.save(calibrate_int8(onnx_target.export_for_calibration(model, size, dynamic_batch=False,
                                                                encoding="onnxruntime"), samples,
                             QuantPolicy()).onnxruntime, str(ort_int8))
    generic = export_deploy_fp32(bench, work / "fp32_generic.onnx", encoding="generic")  # what OpenVINO reads
    ov_fp16 = ov_target.save(ov_target.convert(generic), work / "model_fp16.xml", {"precision": "fp16"})
    ov_int8 = ov_target.save(quantize_openvino(ov_target.convert(generic), samples, QuantPolicy()),
                             work / "model_int8.xml", {"precision": "int8"})
    return {"ort fp32": onnx_target.OnnxRuntimeRunner(deploy_onnx, args.threads),
            "ort int8": onnx_target.OnnxRuntimeRunner(ort_int8, args.threads),
            "ov bf16": ov_target.OpenVINORunner(ov_fp16, args.threads),
            "ov int8": ov_target.OpenVINORunner(ov_int8, args.threads)}


def _ms(needed: float) -> str:
    """A time budget, or why there is none (the linear layers alone already miss the target)."""
    return f"{needed:5.1f}" if needed > 0 else "none (even at 0 ms)"


def main() -> None:
    bench = bench_setup(__doc__, "ceiling", calib=True)
    args, size, model, work = bench.args, bench.size, bench.model, bench.work
    layers = linear_layers(to_deploy(model, size, ffn_layout="linear"), size)
    per_chain = _chain_runners(chains(layers), work, args.threads)
    whole = _whole_runners(bench)

    columns = ("ort fp32", "ort int8", "ov bf16", "ov int8")
    linear = dict.fromkeys(columns, 0.0)
    print(f"{args.arch}, batch 1, {size[0]}x{size[1]}, {args.threads} threads, median of {args.rounds} "
          "interleaved runs; ms")
    print(f"{'part':34s}" + "".join(f"{c:>10s}" for c in columns))
    for label, chain in per_chain.items():
        medians = interleaved_medians(chain["runners"], chain["x"], args.warmup, args.rounds)
        print(f"{label:34s}" + "".join(f"{medians[c]:10.2f}" for c in columns))
        for c in columns:
            linear[c] += medians[c]
    total = interleaved_medians(whole, random_input(size), args.warmup, args.rounds)
    print(f"{'all ' + str(len(layers)) + ' linear layers':34s}" + "".join(f"{linear[c]:10.2f}" for c in columns))
    print(f"{'whole model':34s}" + "".join(f"{total[c]:10.2f}" for c in columns))
    print()

    def ceiling(float_col: str, int8_col: str) -> float:
        return total[float_col] - linear[float_col] + linear[int8_col]

    ort_rest, ov_rest = total["ort fp32"] - linear["ort fp32"], total["ov bf16"] - linear["ov bf16"]
    print(f"linear layers' share of the whole: ort fp32 {linear['ort fp32'] / total['ort fp32']:.0%}, "
          f"ov bf16 {linear['ov bf16'] / total['ov bf16']:.0%}")
    print(f"int8 speed-up of the linear layers alone: ort {linear['ort fp32'] / linear['ort int8']:.2f}x, "
          f"ov over bf16 {linear['ov bf16'] / linear['ov int8']:.2f}x")
    print("whole-model ratio if only the linear layers became int8 (ceiling) vs measured int8 export:")
    rows = [("ort fp32 / ort int8", "ort fp32", ceiling("ort fp32", "ort int8"), "ort int8", 1.5),
            ("ov bf16 / ov int8", "ov bf16", ceiling("ov bf16", "ov int8"), "ov int8", 1.3),
            ("ort fp32 / ov int8", "ort fp32", ceiling("ov bf16", "ov int8"), "ov int8", 2.5)]
    for label, base, bound, measured, target in rows:
        print(f"  {label:22s} ceiling {total[base] / bound:5.2f}   measured {total[base] / total[measured]:5.2f}"
              f"   target {target}")
    # Two ways to the target: make only the INT8 model's non-linear part faster, or make the
    # non-linear part faster in both (ratio = (linear_float + rest) / (linear_int8 + rest)).
    print("non-linear part (everything but the linear layers) needed for the target, ms:")
    for label, lf, li, rest, target in (("ort int8 vs ort fp32", linear["ort fp32"], linear["ort int8"], ort_rest, 1.5),
                                        ("ov int8 vs ov bf16", linear["ov bf16"], linear["ov int8"], ov_rest, 1.3)):
        only_int8 = (lf + rest) / target - li
        shared = (lf - target * li) / (target - 1)
        print(f"  {label:22s} today {rest:5.1f};  in the int8 model alone {_ms(only_int8)};  "
              f"in both models {_ms(shared)}")
    only_ov_int8 = total["ort fp32"] / 2.5 - linear["ov int8"]
    print(f"  {'ov int8 vs ort fp32':22s} today {ov_rest:5.1f};  in the ov int8 model alone {_ms(only_ov_int8)}"
          " (target 2.5)")

if __name__ == "__main__":
    main()
