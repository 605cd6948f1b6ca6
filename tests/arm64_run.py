"""Run artifacts with rmt-deploy's own runners and save their outputs: the same script on x86 and, under
qemu-aarch64, on emulated ARM CPUs (tests/test_arm64.py), so both sides run identical code.

    python arm64_run.py INPUTS.npy OUT.npz ARTIFACT...

Each artifact runs one image at a time at its runtime's verified settings, one thread. An artifact
that fails to load or run is recorded as its error text instead of outputs.
"""
from __future__ import annotations

import platform
import sys
import traceback
from pathlib import Path

import numpy as np


def main(inputs: str, out: str, *artifacts: str) -> None:
    from rmt_deploy.targets import target_for_path

    x = np.load(inputs)
    results: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for artifact in map(Path, artifacts):
        try:
            target = target_for_path(artifact)
            name = target.describe(artifact)["input_name"]
            with target.load(artifact, threads=1) as runner:
                outputs = [next(iter(runner.infer({name: x[i:i + 1]}).values())) for i in range(len(x))]
            results[artifact.name] = np.concatenate(outputs).astype(np.float32)
        except Exception:  # noqa: BLE001 — the test names the artifact and shows why
            errors[artifact.name] = traceback.format_exc(limit=3)
    np.savez(out, **results, __machine__=np.array(platform.machine()),
             __errors__=np.array(repr(errors)))


if __name__ == "__main__":
    main(*sys.argv[1:])
