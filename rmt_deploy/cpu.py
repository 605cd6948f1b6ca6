"""What this CPU offers for int8 and half-precision math, recorded next to every figure.

INT8 artifacts bound for CPUs must be right on CPUs other than the one that exported them
(docs/int8.md, "INT8 on every CPU"). The fact that matters is how the CPU accumulates u8 x s8 products:

- x86 without VNNI (AVX2-only: AMD Zen 1-3, older Intel, Atom; AVX-512 without VNNI) sums
  pairs of products into int16 (``vpmaddubsw``), which saturates beyond 32767;
- x86 with AVX-VNNI, AVX512-VNNI or AMX, and ARM's NEON/dot-product paths, accumulate in int32.

``rmt_deploy.quant.policy.WEIGHT_RANGES`` explains the 7-bit weights that make the first
group exact as well.
"""
from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass

__all__ = ["CpuFeatures", "cpu_features", "cpu_name", "parse_cpuinfo", "usable_cores", "restricted_threads"]

# /proc/cpuinfo flag → the name reports use; only the flags that change which kernels run.
_X86 = {"avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx512f": "AVX512F", "avx512_vnni": "AVX512-VNNI",
        "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX512-BF16", "avx512_fp16": "AVX512-FP16",
        "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}
_ARM = {"asimd": "NEON", "asimddp": "DOTPROD", "i8mm": "I8MM", "bf16": "BF16", "sve": "SVE"}
_INT32_ACCUMULATE_X86 = ("AVX512-VNNI", "AVX-VNNI", "AMX-INT8")
# macOS reports ARM features through sysctl; Apple silicon always has NEON.
_MAC_ARM = {"hw.optional.arm.FEAT_DotProd": "DOTPROD", "hw.optional.arm.FEAT_I8MM": "I8MM",
            "hw.optional.arm.FEAT_BF16": "BF16"}


@dataclass(frozen=True)
class CpuFeatures:
    arch: str  # "x86_64", "arm64" or what the platform says
    isa: tuple[str, ...]  # names from _X86 / _ARM, sorted
    known: bool  # False when the features could not be read (the int8 answers are then None)

    @property
    def int8_saturates(self) -> bool | None:
        """True when u8 x s8 products are summed in pairs into int16 (x86 without VNNI/AMX)."""
        if not self.known:
            return None
        if self.arch == "x86_64":
            return not any(f in self.isa for f in _INT32_ACCUMULATE_X86)
        return False if self.arch == "arm64" else None

    def to_dict(self) -> dict:
        saturates = self.int8_saturates
        accumulation = {True: "int16 pairs, saturating (x86 without VNNI/AMX)",
                        False: "int32", None: "unknown"}[saturates]
        return {"arch": self.arch, "isa": list(self.isa), "int8_accumulation": accumulation}


def parse_cpuinfo(text: str, machine: str) -> CpuFeatures:
    """Features from /proc/cpuinfo (the ``flags`` line on x86, ``Features`` on ARM)."""
    arch = _arch(machine)
    table = _X86 if arch == "x86_64" else _ARM
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return CpuFeatures(arch, tuple(sorted(name for flag, name in table.items() if flag in flags)), True)
    return CpuFeatures(arch, (), False)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> CpuFeatures:
    machine = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read(), machine)
    except OSError:
        pass
    if platform.system() == "Darwin" and _arch(machine) == "arm64":
        found = ["NEON"] + [name for key, name in _MAC_ARM.items() if _sysctl(key) == "1"]
        return CpuFeatures("arm64", tuple(sorted(found)), True)
    return CpuFeatures(_arch(machine), (), False)


def _arch(machine: str) -> str:
    m = machine.lower()
    if m in ("x86_64", "amd64"):
        return "x86_64"
    return "arm64" if m in ("arm64", "aarch64") else m


def _sysctl(key: str) -> str | None:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity (taskset, a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        return os.cpu_count() or 1


def restricted_threads() -> int | None:
    """A thread count for runtimes when this process may use fewer CPUs than the machine has;
    None when it may use them all (each runtime's own default then counts physical cores). A
    runtime that counts the machine's CPUs runs more threads than it has cores, and its spinning
    workers then slow each other down (measured: two exports pinned to one core each took 0.6x
    the time of two unpinned ones)."""
    usable = usable_cores()
    return usable if usable < (os.cpu_count() or usable) else None
