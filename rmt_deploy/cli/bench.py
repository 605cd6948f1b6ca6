"""`rmt-deploy bench` and `rmt-deploy check`: measure artifacts, gate CI on the numbers."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .app import ExecutionOpt, JsonOpt, Output, QuietOpt, ThreadsOpt, app, errors_to_exit

BENCH_EXAMPLES = """
[b]Examples[/b]

  rmt-deploy bench --from rmt-deploy-out --batch 1,8,32     [dim]# updates that folder's report[/dim]
  rmt-deploy bench model.onnx --threads 2 --iters 100 --out bench/
  rmt-deploy bench --from out/ --eval /data/val             [dim]# accuracy per artifact too[/dim]
  rmt-deploy bench model_int8.xml --device CPU --hint throughput --batch 1,8
"""

CHECK_EXAMPLES = """
[b]Examples[/b]

  rmt-deploy check out/report.json                          [dim]# drop vs the same report's FP32[/dim]
  rmt-deploy check out/report.json --baseline main/report.json --max-latency-regression 0.1
  rmt-deploy check out/report.json --config limits.json --junit results.xml
"""


@app.command(epilog=BENCH_EXAMPLES)
def bench(
    artifacts: Annotated[Optional[list[Path]], typer.Argument(help="Artifact files (model.onnx …).",
                                                              show_default=False)] = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from", help="Export folder: benchmark its artifacts "
                                                     "and update its report.", show_default=False)] = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated.")] = "1",
    size: Annotated[Optional[str], typer.Option("--size", help="Input sizes to time besides the size the "
                                                "artifacts were verified at, comma-separated HxW (e.g. "
                                                "224,288x384); each must be one the artifact takes (export "
                                                "--dynamic).",
                                                show_default=False)] = None,
    threads: ThreadsOpt = None,
    iters: Annotated[int, typer.Option("--iters", help="Minimum timed runs per cell.")] = 30,
    min_time: Annotated[float, typer.Option("--min-time", help="Minimum seconds of timed runs per cell.")] = 1.0,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 5,
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="ImageFolder: top-1, drop, agreement "
                                                     "per artifact.", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder when artifacts are given as "
                                          "files.")] = Path("rmt-deploy-bench"),
    no_reference: Annotated[bool, typer.Option("--no-reference", help="Skip timing the PyTorch reference.")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="OpenVINO device: CPU, GPU, NPU, AUTO … "
                                                  "Default: every device OpenVINO sees.", show_default=False)] = None,
    hint: Annotated[str, typer.Option("--hint", help="OpenVINO performance hint: latency, or throughput (also "
                                      "measures images/s with parallel requests).")] = "latency",
    execution: ExecutionOpt = "verified",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Benchmark artifacts across batch and input sizes: latency, throughput, load time, memory, accuracy."""
    with errors_to_exit():
        from ..jobs.bench import BenchOptions, parse_batches, run_bench
        from ..sizes import parse_sizes

        opts = BenchOptions(artifacts=tuple(artifacts or ()), from_dir=from_dir, batches=parse_batches(batch),
                            sizes=parse_sizes(size) if size is not None else (),
                            threads=threads, min_iters=iters, min_seconds=min_time, warmup=warmup,
                            eval_dir=eval_dir, out=out_dir, reference=not no_reference, device=device,
                            hint=hint.strip().lower(), execution=execution.strip().lower())
        output = Output(as_json, quiet)
        report = run_bench(opts, output.progress)
        where = from_dir or out_dir
        output.result(report, lambda console: _matrix(console, report),
                      f"report: {where / 'report.md'}  ({where / 'report.json'}, {where / 'plot.png'})")


def _matrix(out: Console, report: dict) -> None:
    table = Table(title="benchmark matrix", title_justify="left")
    sizes = len((report.get("bench") or {}).get("sizes") or ()) > 1  # the verified size, and --size ones
    for col in ("target", "prec.", "runtime", *(("input",) if sizes else ()), "batch", "status", "top-1", "drop",
                "p50 ms", "p99 ms", "img/s"):
        table.add_column(col, justify="left" if col in ("target", "prec.", "runtime", "status") else "right",
                         no_wrap=True)
    notes = []
    for a in report["artifacts"] + report.get("reference_runs", []):
        acc = a.get("accuracy") or {}
        for b in a.get("benchmarks") or [{"batch": "—", **a}]:
            lat = b.get("latency_ms") or {}
            status = b["status"] + (" [yellow]noisy[/yellow]" if lat.get("noisy") else "")
            if b.get("reason"):
                notes.append(f"{a['target']}/{a['precision']} batch {b['batch']}: {b['reason']}")
            runtime = (b.get("runtime") or "").replace("onnxruntime ", "ort ").replace("ExecutionProvider", "")
            shape = (f"{b['size'][0]}x{b['size'][1]}" if b.get("size") else "—",) if sizes else ()
            table.add_row(a["target"], a["precision"], runtime.split(" eager")[0], *shape, str(b["batch"]), status,
                          f"{acc['top1']:.2f}" if acc.get("top1") is not None else "—",
                          f"{acc['drop']:.2f}" if acc.get("drop") is not None else "—",
                          f"{lat['p50']:.2f}" if lat else "—", f"{lat['p99']:.2f}" if lat else "—",
                          f"{b['throughput']:.0f}" if b.get("throughput") else "—")
    out.print(table)
    for note in dict.fromkeys(notes):
        out.print(f"  [dim]{escape(note)}[/dim]", highlight=False)


@app.command(epilog=CHECK_EXAMPLES)
def check(
    report_path: Annotated[Path, typer.Argument(metavar="REPORT", help="report.json to check.", show_default=False)],
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="Earlier report.json to compare "
                                                     "with (same target/precision).", show_default=False)] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Allowed top-1 drop, in points.")] = 0.5,
    max_latency_regression: Annotated[float, typer.Option(
        "--max-latency-regression", help="Allowed p50 increase vs the baseline (0.15 = 15%).")] = 0.15,
    min_cosine: Annotated[Optional[float], typer.Option(
        "--min-cosine", help="Lowest worst-image cosine vs PyTorch FP32, per output (backbone feature maps; "
                             "logits otherwise), e.g. 0.99.", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="JSON limits per target "
                                                   "(override the flags).", show_default=False)] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write JUnit XML here.",
                                                  show_default=False)] = None,
    taps_baseline: Annotated[Optional[Path], typer.Option(
        "--taps-baseline", help="compare.json of a known-good `rmt-deploy compare`; the compare.json beside REPORT "
                                "must not be worse at any tap.", show_default=False)] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Gate CI: accuracy drop, feature cosine and latency regression per artifact; exit 1 if any check fails."""
    with errors_to_exit():
        from ..bench.check import (
            Limits,
            check_report,
            load_limits,
            read_report,
            write_junit,
        )

        report = read_report(report_path)
        base = read_report(baseline, "baseline") if baseline else None
        results = check_report(report, base, load_limits(config, Limits(max_drop, max_latency_regression, min_cosine)))
        if taps_baseline:
            from ..bench.taps import taps_checks

            results += taps_checks(report_path, taps_baseline)
        if junit:
            write_junit(results, junit)
        failed = [r for r in results if r.outcome == "fail"]

        def table(out: Console) -> None:
            rows = Table("artifact", "check", "result", "detail", title="rmt-deploy check", title_justify="left")
            colour = {"pass": "green", "fail": "red", "skip": "dim"}
            for r in results:
                rows.add_row(r.artifact, r.check, f"[{colour[r.outcome]}]{r.outcome}[/]", r.reason)
            out.print(rows)

        Output(as_json, quiet).result({"passed": not failed, "results": [r.to_dict() for r in results]}, table,
                                      f"{len(failed)} failed, {sum(r.outcome == 'pass' for r in results)} passed, "
                                      f"{sum(r.outcome == 'skip' for r in results)} skipped")
        if failed:
            raise typer.Exit(1)


