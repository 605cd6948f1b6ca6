"""Peak memory of one inference, measured in a fresh process: what a device must have free to run
an artifact, not what this (long-lived, torch-laden) process happens to hold.

The child imports only the target's runtime, loads the artifact with the target's ``load`` runner
(the runtime's defaults, as a user loads it), runs one zero image of the given size twice, and
prints its high-water marks (Linux ``VmHWM``): after
the imports, after the load (the runtime's own weights and folded constants), after the first run and
after the second. The second run is the steady state: ONNX Runtime's default memory pattern plans its
buffers on the first run and allocates the plan as one block on the second, which for RMT-T at
800x1344 took the peak from 637 to 1005 MiB.

    python -m rmt_deploy.bench.peak_memory TARGET PATH HxW THREADS
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["measure", "MEMORY_TIMEOUT_S"]

MEMORY_TIMEOUT_S = 600


def measure(target: str, path: Path, size: tuple[int, int], threads: int | None) -> dict | None:
    """{"size", "imports_mb", "load_mb", "first_run_mb", "peak_mb"} of a fresh process running one image of
    ``size`` from ``path`` twice; None where the kernel keeps no high-water mark (not Linux) or the child failed (its
    error in ``"error"``)."""
    if not Path("/proc/self/status").exists():
        return None
    cmd = [sys.executable, "-m", "rmt_deploy.bench.peak_memory", target, str(path), f"{size[0]}x{size[1]}",
           str(threads or 0)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=MEMORY_TIMEOUT_S,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"size": list(size), "error": f"did not finish in {MEMORY_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"size": list(size), "error": tail[:300]}
    return {"size": list(size), **json.loads(lines[-1])}


def _child(target_name: str, path: str, size: str, threads: str) -> None:
    import numpy as np

    from ..targets import resolve_target
    from .memory import peak_rss_bytes

    h, w = (int(s) for s in size.split("x"))
    target = resolve_target(target_name)
    marks = {"imports_mb": peak_rss_bytes()}
    with target.load(Path(path), int(threads) or None) as runner:
        marks["load_mb"] = peak_rss_bytes()
        feeds = {runner.input_names()[0]: np.zeros((1, 3, h, w), np.float32)}
        runner.infer(feeds)
        marks["first_run_mb"] = peak_rss_bytes()
        runner.infer(feeds)
        marks["peak_mb"] = peak_rss_bytes()
    print(json.dumps({k: round(v / 2**20, 1) for k, v in marks.items()}))


if __name__ == "__main__":
    _child(*sys.argv[1:5])
