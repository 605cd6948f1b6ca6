"""report.json / report.md writer (the contract CI gates read: docs/reference/report.md)."""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_path, write_text_atomic
from ..outdir import REPORT_JSON
from ..targets import TARGETS
from .plot import PLOT_PNG, write_plot

__all__ = ["write_report", "render_markdown", "status_text", "REPORT_MD", "SCHEMA_VERSION"]

REPORT_MD = "report.md"
SCHEMA_VERSION = 1


def write_report(out_dir: Path, report: dict) -> None:
    """Write report.json, plot.png and report.md into ``out_dir``, each file atomically."""
    report = {"schema_version": SCHEMA_VERSION, **report}
    write_text_atomic(out_dir / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    with atomic_path(out_dir / PLOT_PNG) as tmp:
        has_plot = write_plot(tmp, report) is not None  # None: nothing measured to plot
    write_text_atomic(out_dir / REPORT_MD, render_markdown(report, has_plot))


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
        if "min_cosine" in aware:
            budget, first, last = (f"worst cosine ≥ {aware['min_cosine']:g}", f"initial cosine {aware['initial_cosine']:.5f}",
                                   f"final cosine {aware.get('final_cosine', 0):.5f}")
        else:
            budget, first, last = (f"{aware['max_drop']:g} points", f"initial drop {aware['initial_drop']:.2f}",
                                   f"final drop {aware.get('final_drop', 0):.2f}")
        lines += [f"- accuracy-aware: budget {budget}, {first}"
                  + (f", {len(reverted)} layer(s) reverted to float ({', '.join(reverted[:8])}"
                     f"{' …' if len(reverted) > 8 else ''}), {last}" if reverted else "")
                  + ("" if aware["fits"] else " — **does not fit the budget**")]
        lines += [f"- per-block INT8 error behind this ranking: `rmt-deploy compare {Path(a['path']).name if a.get('path') else 'ARTIFACT'} "
                  "--isolate` (each block quantized alone, docs/compare.md)"]
    return lines + ([""] if lines else [])


def _graph_lines(a: dict) -> list[str]:
    """The artifact's own section: what its target says about its graph, then how it ran."""
    target = TARGETS.get(a["target"])
    own = target.render(a) if target else []
    graph = a.get("graph")
    if not graph:
        return own
    ops = ", ".join(f"{k} {v}" for k, v in list(graph.get("ops", {}).items())[:10])
    lines = [f"### {a['target']} / {a['precision']} graph", "", *own]
    if a.get("verified_with"):
        lines.append(f"- verified with {a['verified_with']}")
    run = a.get("execution")
    if run:  # OpenVINO: what the device really computed in
        layers = ", ".join(f"{k} {v}" for k, v in sorted(run["layers_by_precision"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- ran on {run['device']} with inference precision **{run['inference_precision']}**; "
                     f"compute layers by precision: {layers}")
    if a.get("compile_config"):
        config = ", ".join(f"`{k}={v}`" for k, v in a["compile_config"].items())
        lines.append(f"- verified with compile properties {config} (stored in the artifact; rmt-deploy's runners use them)")
    target_missed = a.get("int8_target")
    if target_missed:  # INT8 under 0.99 at some verified size (jobs.verify.INT8_TARGET_COSINE)
        where = ", ".join(f"{m['cosine']:.4f} at {m['size'][0]}x{m['size'][1]}" for m in target_missed["missed"])
        lines.append(f"- **under INT8's {target_missed['min_cosine']} worst cosine**: {where}; "
                     f"`--min-cosine {target_missed['min_cosine']}` keeps the layers that cost most in float")
    other = a.get("at_runtime_default")
    if other:  # the same artifact at the runtime's own defaults, where they differ on this machine
        p, verdict = other["parity"], "meets" if other["meets_threshold"] else "**below**"
        agreement = f", top-1 agreement {100 * p['top1_agreement']:.1f}%" if p.get("top1_agreement") is not None else ""
        lines.append(f"- at the runtime's defaults ({other['runtime']}, inference precision "
                     f"{other['inference_precision']}): worst cosine {p['cosine']:.5f}, max abs diff {p['max_abs']:.2e}"
                     f"{agreement} — {verdict} the threshold it is verified at")
    if a.get("latency_skipped"):
        lines.append(f"- latency not measured: {a['latency_skipped']}")
    lines += _memory_lines(a)
    return lines + ([f"- ops: {ops}"] if ops else []) + [""]


def _memory_lines(a: dict) -> list[str]:
    m = a.get("memory")
    if not m:
        return []
    at = f"{m['size'][0]}x{m['size'][1]}"
    if m.get("error"):
        return [f"- peak memory at {at} not measured: {m['error']}"]
    first = f", {m['first_run_mb']:.0f} MiB after the first run" if m.get("first_run_mb") else ""
    runs = " over two runs" if first else ""
    return [f"- inference at {at} in a fresh process: peak {m['peak_mb']:.0f} MiB resident{runs} "
            f"({m['imports_mb']:.0f} MiB before the runtime was imported, {m['load_mb']:.0f} MiB after loading"
            f"{first})"]


def _peak_mb(a: dict) -> str:
    """The matrix's memory cell: a fresh process's peak over two runs of one image, else this bench process's
    peak."""
    m = a.get("memory") or {}
    if m.get("peak_mb"):
        return f"{m['peak_mb']:.0f} MiB"
    return f"{a['peak_rss_mb']:.0f} MiB*" if a.get("peak_rss_mb") else "—"


def render_markdown(report: dict, has_plot: bool = False) -> str:
    model, ver = report["model"], report.get("verification") or {}
    size = "x".join(map(str, model.get("input_size") or [])) or "?"
    lines = ["# rmt-deploy report", ""]
    params = f"{model['params_m']:.2f} M params, " if model.get("params_m") else ""
    if model.get("task") == "backbone":
        maps = ", ".join(f"{o['name']} (stride {o['stride']}, {o['channels']} ch)" for o in model.get("outputs") or [])
        what = f"backbone: {maps}" + ("" if model.get("extra_norms", True) else "; raw stage outputs (no extra_norms)")
    else:
        what = f"{model.get('num_classes', '?')} classes"
    lines.append(f"- model: **{model.get('variant') or '?'}** ({params}{what}), "
                 f"input {size}, batch {'dynamic' if model.get('dynamic_batch') else 'fixed 1'}")
    if model.get("dynamic_size"):
        dyn = model["dynamic_size"]
        checked = ", ".join("x".join(map(str, s)) for s in dyn["verified_sizes"])
        enumerated = sorted({TARGETS[a["target"]].title for a in report["artifacts"] if a["status"] == "ok"
                             and a["target"] in TARGETS and TARGETS[a["target"]].enumerated_sizes})
        lines.append(f"- dynamic size: height and width {dyn['min']}–{dyn['max']} (multiples of 32); every artifact "
                     f"verified at {checked}" + (f"; {', '.join(enumerated)} packages take exactly these sizes "
                                                 "(enumerated shapes)" if enumerated else ""))
    if model.get("checkpoint"):
        lines.append(f"- checkpoint: `{model['checkpoint']}` (sha256 `{(model.get('sha256') or '')[:16]}…`)")
    if ver.get("images"):
        evals = (f", {ver['eval_samples']} for accuracy" if ver.get("eval_samples")
                 else "; accuracy not measured: pass --eval DIR" if ver.get("bundled_images") else "")
        bundled = "the bundled demo images " if ver.get("bundled_images") else ""
        lines.append(f"- verification images: {bundled}`{ver['images']}` ({ver.get('parity_samples', 0)} for "
                     f"parity{evals})")
    lines += _calibration_lines(report.get("calibration"))
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
    lines += _feature_lines(report)
    lines += _size_lines(report)
    lines += _matrix_lines(report)
    lines += ["", "## How to read this", "",
              "- **max abs diff / cosine**: artifact logits (backbones: the worst feature map) vs the PyTorch FP32 reference on the same "
              "real images; FP32 exports must stay within the tolerance "
              f"(atol {ver.get('atol', 1e-4):g}) or the export fails.",
              "- **top-1 / drop / agreement**: accuracy on the evaluation set (when its classes match the "
              "model); drop is PyTorch FP32 top-1 minus the artifact's, in points; agreement is the share of images "
              "whose top-1 class equals FP32's.",
              "- **latency**: " + _latency_note(report),
              "- **peak memory**: one image at the largest size, in a fresh process that loads only the runtime and "
              "the artifact (each artifact's section says how much of it loading took); in the benchmark matrix, * "
              "marks the bench process's own peak where no fresh process could run.", ""]
    for a in report["artifacts"]:
        lines += _graph_lines(a) + _quantization_lines(a)
    env = report["environment"]
    pkgs = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    isa = env.get("cpu_features") or {"isa": [], "int8_accumulation": "unknown"}
    lines += ["## Environment", "", f"- {env['cpu']} ({env['cpu_count']} logical CPUs), {env['platform']}, "
              f"Python {env['python']}",
              f"- CPU features: {', '.join(isa['isa']) or 'unknown'}; int8 accumulation: {isa['int8_accumulation']}",
              f"- {pkgs}", ""]
    return "\n".join(lines)


def _calibration_lines(calib: dict | None) -> list[str]:
    if not calib:
        return []
    demo = " — the bundled demo digits" if calib["source"] == "demo" else ""
    return [f"- INT8 calibration: `{calib['path']}`, {calib['images']} images (file list sha256 "
            f"`{calib['digest'][:16]}…`){demo}"]


def _size_lines(report: dict) -> list[str]:
    """--dynamic: each artifact's parity (worst cosine / max abs diff) and batch-1 latency at every verified size."""
    rows = [a for a in report["artifacts"] if a.get("parity_at_sizes")]
    if not rows:
        return []
    lines = ["", "## At every verified size (worst image cosine / max abs diff vs PyTorch FP32, p50 ms)", "",
             "| target | precision | size | cosine | max abs diff | p50 ms |", "|---|---|---:|---:|---:|---:|"]
    for a in rows:
        timed = {tuple(t["size"]): t.get("p50") for t in a.get("latency_at_sizes") or []}
        at = [{**(a.get("parity") or {}), "size": report["model"]["input_size"],
               "p50": (a.get("latency_ms") or {}).get("p50")}]
        at += [{**p, "p50": timed.get(tuple(p["size"]))} for p in a["parity_at_sizes"]]
        for p in sorted(at, key=lambda p: (p["size"][0] * p["size"][1], p["size"])):
            lines.append(f"| {a['target']} | {a['precision']} | {p['size'][0]}x{p['size'][1]} | "
                         f"{_fmt(p.get('cosine'), 6)} | {_sci(p.get('max_abs'))} | {_fmt(p.get('p50'))} |")
    return lines


def _feature_lines(report: dict) -> list[str]:
    """Backbones: each feature map's worst-image cosine and max abs difference, per artifact."""
    rows = [a for a in report["artifacts"] if ((a.get("parity") or {}).get("outputs"))]
    if not rows:
        return []
    names = list(rows[0]["parity"]["outputs"])
    lines = ["", "## Feature maps (worst image cosine / max abs diff vs PyTorch FP32)", "",
             "| target | precision | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for a in rows:
        outs = a["parity"]["outputs"]
        cells = [f"{_fmt(outs[n]['cosine'], 5)} / {_sci(outs[n]['max_abs'])}" if n in outs else "—" for n in names]
        lines.append(f"| {a['target']} | {a['precision']} | " + " | ".join(cells) + " |")
    return lines


def _matrix_lines(report: dict) -> list[str]:
    rows = [a for a in report["artifacts"] + report.get("reference_runs", []) if a.get("benchmarks")]
    if not rows:
        return []
    lines = ["", "## Benchmark matrix", "",
             "| target | precision | runtime | input | batch | status | size | top-1 | drop | agreement | p50 ms | p99 ms | img/s | load s | peak memory |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in rows:
        acc = a.get("accuracy") or {}
        size_mb = f"{a['size_bytes'] / 1e6:.1f} MB" if a.get("size_bytes") else "—"
        rss = _peak_mb(a)
        agreement = acc.get("agreement")
        for b in a["benchmarks"]:
            lat = b.get("latency_ms") or {}
            status = status_text(b) + (f" ⚠ noisy (cv {lat['cv']:.0%})" if lat.get("noisy") else "")
            lines.append(
                f"| {a['target']} | {a['precision']} | {b.get('runtime', '—')} | {_input(b)} | {b['batch']} | {status} | "
                f"{size_mb} | "
                f"{_fmt(acc.get('top1'))} | "
                f"{_fmt(acc.get('drop'))} | {_fmt(None if agreement is None else agreement * 100, 2, '%')} | "
                f"{_fmt(lat.get('p50'))} | {_fmt(lat.get('p99'))} | {_fmt(b.get('throughput'), 1)} | "
                f"{_fmt(a.get('load_seconds'))} | {rss} |")
    return lines


def _input(cell: dict) -> str:
    return f"{cell['size'][0]}x{cell['size'][1]}" if cell.get("size") else "—"


def _latency_note(report: dict) -> str:
    lat = next((a["latency_ms"] for a in report["artifacts"] if a.get("latency_ms")), None)
    if not lat:
        return "not measured (--bench-iters 0)."
    return (f"{lat['runtime']}, {lat['threads']} threads, batch {lat['batch']}, "
            f"{lat['warmup']} warm-up + {lat['iterations']} timed runs; p50/p90 of the backend call only. "
            "A ⚠ noisy mark means the runs' coefficient of variation exceeded 10%: the machine was busy. "
            "Compare ratios measured in one run, not absolute times across machines or runs.")
