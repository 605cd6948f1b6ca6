"""Run a model on the int8 code path of an x86 CPU without VNNI (AVX2 only), from any x86 host.

- OpenVINO: its CPU plugin honours oneDNN's ``ONEDNN_MAX_CPU_ISA``; capped at AVX2 it runs the
  same AVX2 kernels (int16 pair sums) as an AMD Zen 3. Under the cap it still picks bf16 from
  the host's features, so FP32 is asked for, which is what an AVX2 CPU defaults to.
- ONNX Runtime: its kernel choice reads CPUID, which qemu's user-mode ``-cpu Haswell`` model
  answers without VNNI or AVX-512; the AVX2 kernels then run emulated (slowly).
- ExecuTorch: XNNPACK picks its kernels from CPUID too (cpuinfo): the same qemu model.

Each runs in a subprocess, so the test process keeps its own kernels.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["openvino_on_avx2", "onnxruntime_on_avx2", "executorch_on_avx2", "qemu_missing"]

_OPENVINO = """
import sys, numpy as np, openvino as ov
x = np.load(sys.argv[2])
model = ov.Core().compile_model(sys.argv[1], "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
np.save(sys.argv[3], np.concatenate([model(x[i:i + 1])[0] for i in range(len(x))]))
"""

_ONNXRUNTIME = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
if sys.argv[4] == "unfused":  # what OnnxRuntimeRunner(fuse_int8=False) sets
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
np.save(sys.argv[3], np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]))
"""

_EXECUTORCH = """
import sys, numpy as np, torch
from executorch.runtime import Runtime
x = np.load(sys.argv[2])
method = Runtime.get().load_program(sys.argv[1]).load_method("forward")
np.save(sys.argv[3], np.concatenate([method.execute([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))]))
"""


def qemu_missing() -> str | None:
    """Why the ONNX Runtime AVX2 emulation cannot run here, or None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "AVX2 emulation is for x86-64 hosts"
    if shutil.which("qemu-x86_64") is None:
        return "qemu-x86_64 not installed (apt-get install qemu-user) to run ONNX Runtime's AVX2 int8 kernels"
    return None


def _run(command: list[str], script: str, model: Path, x: np.ndarray, work: Path, env: dict,
         *args: str) -> np.ndarray:
    """``command script model x.npy y.npy *args`` in ``work``; returns y."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "run.py").write_text(script)
    np.save(work / "x.npy", x)
    done = subprocess.run([*command, str(work / "run.py"), str(model), str(work / "x.npy"), str(work / "y.npy"), *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return np.load(work / "y.npy")


def openvino_on_avx2(xml: Path, x: np.ndarray, work: Path) -> np.ndarray:
    return _run([sys.executable], _OPENVINO, xml, x, work, {"ONEDNN_MAX_CPU_ISA": "AVX2"})


def onnxruntime_on_avx2(onnx_path: Path, x: np.ndarray, work: Path, fused: bool = True) -> np.ndarray:
    return _run(["qemu-x86_64", "-cpu", "Haswell", sys.executable], _ONNXRUNTIME, onnx_path, x, work, {},
                "fused" if fused else "unfused")


def executorch_on_avx2(pte: Path, x: np.ndarray, work: Path) -> np.ndarray:
    return _run(["qemu-x86_64", "-cpu", "Haswell", sys.executable], _EXECUTORCH, pte, x, work, {})
