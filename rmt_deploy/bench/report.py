"""report.json / report.md writer (DESIGN §6: the contract CI gates read)."""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_report", "REPORT_JSON", "REPORT_MD", "SCHEMA_VERSION"]

REPORT_JSON, REPORT_MD = "report.json", "report.md"
SCHEMA_VERSION = 1


def write_report(out_dir: Path, report: dict) -> None:
    """Write both files into ``out_dir`` (a private temp folder; the caller renames it)."""
    report = {"schema_version": SCHEMA_VERSION, **report}
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (out_dir / REPORT_MD).write_text(render_markdown(report))


def _fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _sci(value) -> str:
    return "—" if value is None else f"{value:.2e}"


def render_markdown(report: dict) -> str:
    model = report["model"]
    lines = [
        "# rmt-deploy report",
        "",
        f"- model: **{model['variant']}** ({model['params_m']:.2f} M params, {model['num_classes']} classes), "
        f"input {model['input_size'][0]}×{model['input_size'][1]}, "
        f"batch {'dynamic' if model['dynamic_batch'] else 'fixed 1'}",
        f"- checkpoint: `{model['checkpoint']}` (sha256 `{model['sha256'][:16]}…`)",
        f"- verification images: `{report['verification']['images']}` "
        f"({report['verification']['parity_samples']} for parity"
        + (f", {report['verification']['eval_samples']} for accuracy" if report['verification'].get('eval_samples') else "")
        + ")",
        f"- created {report['created']} by rmt-deploy {report['tool_version']}",
        "",
        "| target | precision | status | size | max abs diff | cosine | top-1 | drop vs FP32 | agreement | p50 ms | p90 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in report["artifacts"]:
        parity, acc, lat = a.get("parity") or {}, a.get("accuracy") or {}, a.get("latency_ms") or {}
        status = a["status"] + (f" ({a['reason']})" if a.get("reason") else "")
        size = f"{a['size_bytes'] / 1e6:.1f} MB" if a.get("size_bytes") else "—"
        agreement = acc.get("agreement")
        lines.append(
            f"| {a['target']} | {a['precision']} | {status} | {size} | {_sci(parity.get('max_abs'))} | "
            f"{_fmt(parity.get('cosine'), 6)} | {_fmt(acc.get('top1'))} | {_fmt(acc.get('drop'), 2)} | "
            f"{_fmt(None if agreement is None else agreement * 100, 2, '%')} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p90'))} |")
    lines += ["", "## How to read this", "",
              "- **max abs diff / cosine**: artifact logits vs the PyTorch FP32 reference on the same "
              "real images; FP32 exports must stay within the tolerance "
              f"(atol {report['verification']['atol']:g}) or the export fails.",
              "- **top-1 / drop / agreement**: accuracy on the evaluation set (when its classes match the "
              "model); drop is PyTorch FP32 top-1 minus the artifact's, in points; agreement is the share of images "
              "whose top-1 class equals FP32's.",
              "- **latency**: " + _latency_note(report), ""]
    for a in report["artifacts"]:
        graph = a.get("graph")
        if graph:
            ops = ", ".join(f"{k} {v}" for k, v in list(graph["ops"].items())[:10])
            lines += [f"### {a['target']} / {a['precision']} graph", "",
                      f"- file `{a['path']}`, {graph['nodes']} nodes, opset {graph['opset']}, "
                      f"max tensor rank {graph['max_rank']}, "
                      f"{graph['attention_chains']} MatMul→Add→Softmax→MatMul chains",
                      f"- ops: {ops}", ""]
    env = report["environment"]
    pkgs = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    lines += ["## Environment", "", f"- {env['cpu']} ({env['cpu_count']} logical CPUs), {env['platform']}, "
              f"Python {env['python']}", f"- {pkgs}", ""]
    return "\n".join(lines)


def _latency_note(report: dict) -> str:
    lat = next((a["latency_ms"] for a in report["artifacts"] if a.get("latency_ms")), None)
    if not lat:
        return "not measured (--bench-iters 0)."
    return (f"{lat['runtime']}, {lat['threads']} threads, batch {lat['batch']}, "
            f"{lat['warmup']} warm-up + {lat['iterations']} timed runs; p50/p90 of the backend call only. "
            "Compare ratios measured in one run, not absolute times across machines or runs.")
