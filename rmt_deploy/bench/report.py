"""report.json / report.md writer (DESIGN §6: the contract CI gates read)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..outdir import REPORT_JSON
from .plot import PLOT_PNG, write_plot

__all__ = ["write_report", "REPORT_JSON", "REPORT_MD", "SCHEMA_VERSION"]

REPORT_MD = "report.md"
SCHEMA_VERSION = 1


def write_report(out_dir: Path, report: dict) -> None:
    """Write report.json, plot.png and report.md into ``out_dir``, each file atomically."""
    report = {"schema_version": SCHEMA_VERSION, **report}
    _atomic_write(out_dir / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    plot_tmp = out_dir / f".{PLOT_PNG}.tmp-{os.getpid()}"
    has_plot = write_plot(plot_tmp, report) is not None
    if has_plot:
        os.replace(plot_tmp, out_dir / PLOT_PNG)
    _atomic_write(out_dir / REPORT_MD, render_markdown(report, has_plot))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _sci(value) -> str:
    return "—" if value is None else f"{value:.2e}"


def status_text(entry: dict) -> str:
    """ok / skipped / failed (export) / failed (validation), with the reason."""
    text = entry["status"] + (f" ({entry['stage']})" if entry.get("stage") else "")
    return text + (f": {entry['reason']}" if entry.get("reason") else "")


def _quantization_lines(a: dict) -> list[str]:
    quant, aware = a.get("quantization"), a.get("accuracy_aware")
    lines = []
    if quant and "calibrator" not in quant:  # weight-only formats (CoreML)
        lines += [f"- INT8: weights {quant['weights']}; activations {quant['activations']}"]
    elif quant:
        lines += [f"- INT8 ({quant['encoding']} encoding): calibrated with {quant['calibrator']} on "
                  f"{quant['calib_images']} images in {quant['calib_seconds']:.1f} s, statistic {quant['statistic']}; "
                  f"{quant['float_for_speed']} layers kept in float where int8 ran slower"]
        if "weight_bits" in quant:  # reports written before the weight grid was recorded lack it
            lines += [f"- INT8 weights on the {quant['weight_bits']}-bit grid (largest |w| {quant['max_abs_weight']}): "
                      f"exact on {quant['exact_on']}"]
    if aware:
        reverted = aware.get("reverted_layers") or []
        lines += [f"- accuracy-aware: budget {aware['max_drop']:g} points, initial drop {aware['initial_drop']:.2f}"
                  + (f", {len(reverted)} layer(s) reverted to float ({', '.join(reverted[:8])}"
                     f"{' …' if len(reverted) > 8 else ''}), final drop {aware['final_drop']:.2f}" if reverted else "")
                  + ("" if aware["fits"] else " — **does not fit the budget**")]
    return lines + ([""] if lines else [])


def _graph_lines(a: dict) -> list[str]:
    graph = a.get("graph")
    if not graph:
        return []
    ops = ", ".join(f"{k} {v}" for k, v in list(graph["ops"].items())[:10])
    lines = [f"### {a['target']} / {a['precision']} graph", ""]
    if a["target"] == "openvino":
        int8, dtypes = graph["int8"], ", ".join(f"{k} {v}" for k, v in graph["constant_dtypes"].items())
        lines += [f"- IR `{a['path'] or 'removed'}` + `.bin`, {graph['nodes']} ops, {graph['attention']} ScaledDotProductAttention; "
                  f"weight constants by type: {dtypes}"
                  + (f"; {int8['quantized_layers']} int8 layers, {int8['fake_quantize']} FakeQuantize"
                     if int8["quantized_layers"] else "")]
    elif "opset" in graph:  # ONNX
        lines += [f"- file `{a['path'] or 'removed'}`, {graph['nodes']} nodes, opset {graph['opset']}, "
                  f"max tensor rank {graph['max_rank']}, "
                  f"{graph['attention_chains']} MatMul→Add→Softmax→MatMul chains"]
    else:  # CoreML preflight
        weights = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in graph["weight_bytes"].items())
        fp32 = ", ".join(f"{k} {v}" for k, v in graph["fp32_ops"].items()) or "none"
        lines += [f"- package `{a['path']}`, preflight **{graph['status']}**"
                  + (f" ({'; '.join(graph['problems'])})" if graph["problems"] else "")
                  + f", max tensor rank {graph['max_rank']} (Core ML limit 5), "
                  f"{graph['fp16_compute_fraction']:.1%} of ops compute in FP16 (FP32: {fp32}); weights: {weights}"]
    if a.get("verified_with"):
        lines.append(f"- verified with {a['verified_with']}")
    run = a.get("execution")
    if run:  # OpenVINO: what the device really computed in
        layers = ", ".join(f"{k} {v}" for k, v in sorted(run["layers_by_precision"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- ran on {run['device']} with inference precision **{run['inference_precision']}**; "
                     f"compute layers by precision: {layers}")
    if a.get("latency_skipped"):
        lines.append(f"- latency not measured: {a['latency_skipped']}")
    return lines + [f"- ops: {ops}", ""]


def _readiness_lines(a: dict) -> list[str]:
    ready = a.get("readiness")
    if not ready:
        return []
    lines = [f"### {a['target']} / {a['precision']} readiness", "",
             f"- `{a['onnx']}` is **{ready['status']}** for {ready['checked_for']}"
             + (f": {'; '.join(ready['problems'])}" if ready["problems"] else "")
             + (" (explicit quantization: Q/DQ)" if ready["explicit_quantization"] else "")]
    rtx = ready.get("rtx_build")
    lines.append(f"- parse + build with {rtx['proxy']}: {rtx['status']} ({rtx['layers']} layers, {rtx['seconds']} s)"
                 + (f" — {'; '.join(rtx['errors'])}" if rtx["errors"] else "") if rtx else
                 "- TensorRT-RTX not installed: no parse/build proxy (pip install \"rmt-deploy[trt-check]\")")
    if a.get("onnx_parity"):
        lines.append(f"- the same ONNX in ONNX Runtime vs PyTorch: cosine {a['onnx_parity']['cosine']:.6f}")
    if a.get("trtexec"):
        lines.append(f"- on the device: `{' '.join(a['trtexec'])}` (all in `build_engine.sh`)")
    return lines + [""]


def render_markdown(report: dict, has_plot: bool = False) -> str:
    model, ver = report["model"], report.get("verification") or {}
    size = "x".join(map(str, model.get("input_size") or [])) or "?"
    lines = ["# rmt-deploy report", ""]
    params = f"{model['params_m']:.2f} M params, " if model.get("params_m") else ""
    lines.append(f"- model: **{model.get('variant') or '?'}** ({params}{model.get('num_classes', '?')} classes), "
                 f"input {size}, batch {'dynamic' if model.get('dynamic_batch') else 'fixed 1'}")
    if model.get("checkpoint"):
        lines.append(f"- checkpoint: `{model['checkpoint']}` (sha256 `{(model.get('sha256') or '')[:16]}…`)")
    if ver.get("images"):
        evals = f", {ver['eval_samples']} for accuracy" if ver.get("eval_samples") else ""
        lines.append(f"- verification images: `{ver['images']}` ({ver.get('parity_samples', 0)} for parity{evals})")
    lines += [f"- created {report['created']} by rmt-deploy {report['tool_version']}", ""]
    if has_plot:
        lines += ["![accuracy vs latency, latency by batch size](plot.png)", ""]
    lines += ["| target | precision | status | size | max abs diff | cosine | top-1 | drop vs FP32 | agreement | p50 ms | p90 ms |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in report["artifacts"]:
        parity, acc, lat = a.get("parity") or {}, a.get("accuracy") or {}, a.get("latency_ms") or {}
        size_mb = f"{a['size_bytes'] / 1e6:.1f} MB" if a.get("size_bytes") else "—"
        agreement = acc.get("agreement")
        lines.append(
            f"| {a['target']} | {a['precision']} | {status_text(a)} | {size_mb} | {_sci(parity.get('max_abs'))} | "
            f"{_fmt(parity.get('cosine'), 6)} | {_fmt(acc.get('top1'))} | {_fmt(acc.get('drop'), 2)} | "
            f"{_fmt(None if agreement is None else agreement * 100, 2, '%')} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p90'))} |")
    lines += _matrix_lines(report)
    lines += ["", "## How to read this", "",
              "- **max abs diff / cosine**: artifact logits vs the PyTorch FP32 reference on the same "
              "real images; FP32 exports must stay within the tolerance "
              f"(atol {ver.get('atol', 1e-4):g}) or the export fails.",
              "- **top-1 / drop / agreement**: accuracy on the evaluation set (when its classes match the "
              "model); drop is PyTorch FP32 top-1 minus the artifact's, in points; agreement is the share of images "
              "whose top-1 class equals FP32's.",
              "- **latency**: " + _latency_note(report), ""]
    for a in report["artifacts"]:
        lines += _graph_lines(a) + _readiness_lines(a) + _quantization_lines(a)
    env = report["environment"]
    pkgs = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    isa = env.get("cpu_features") or {"isa": [], "int8_accumulation": "unknown"}
    lines += ["## Environment", "", f"- {env['cpu']} ({env['cpu_count']} logical CPUs), {env['platform']}, "
              f"Python {env['python']}",
              f"- CPU features: {', '.join(isa['isa']) or 'unknown'}; int8 accumulation: {isa['int8_accumulation']}",
              f"- {pkgs}", ""]
    return "\n".join(lines)


def _matrix_lines(report: dict) -> list[str]:
    rows = [a for a in report["artifacts"] + report.get("reference_runs", []) if a.get("benchmarks")]
    if not rows:
        return []
    lines = ["", "## Benchmark matrix", "",
             "| target | precision | runtime | batch | status | size | top-1 | drop | agreement | p50 ms | p99 ms | img/s | load s | peak RSS |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in rows:
        acc = a.get("accuracy") or {}
        size_mb = f"{a['size_bytes'] / 1e6:.1f} MB" if a.get("size_bytes") else "—"
        rss = f"{a['peak_rss_mb']:.0f} MB" if a.get("peak_rss_mb") else "—"
        agreement = acc.get("agreement")
        for b in a["benchmarks"]:
            lat = b.get("latency_ms") or {}
            status = status_text(b) + (f" ⚠ noisy (cv {lat['cv']:.0%})" if lat.get("noisy") else "")
            lines.append(
                f"| {a['target']} | {a['precision']} | {b.get('runtime', '—')} | {b['batch']} | {status} | {size_mb} | "
                f"{_fmt(acc.get('top1'))} | "
                f"{_fmt(acc.get('drop'))} | {_fmt(None if agreement is None else agreement * 100, 2, '%')} | "
                f"{_fmt(lat.get('p50'))} | {_fmt(lat.get('p99'))} | {_fmt(b.get('throughput'), 1)} | "
                f"{_fmt(a.get('load_seconds'))} | {rss} |")
    return lines


def _latency_note(report: dict) -> str:
    lat = next((a["latency_ms"] for a in report["artifacts"] if a.get("latency_ms")), None)
    if not lat:
        return "not measured (--bench-iters 0)."
    return (f"{lat['runtime']}, {lat['threads']} threads, batch {lat['batch']}, "
            f"{lat['warmup']} warm-up + {lat['iterations']} timed runs; p50/p90 of the backend call only. "
            "A ⚠ noisy mark means the runs' coefficient of variation exceeded 10%: the machine was busy. "
            "Compare ratios measured in one run, not absolute times across machines or runs.")
