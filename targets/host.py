"""The host CPU: x86-64 (or whatever this machine is) through LLVM, tuned to the detected core."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

import tvm
from tvm import relax
from tvm.target import codegen

from ..errors import UserError
from .base import CpuTarget, Session, default_threads


@lru_cache(maxsize=1)
def detect_cpu() -> str:
    """LLVM's name for this machine's core (e.g. `znver4`, `skylake-avx512`)."""
    return str(codegen.llvm_get_system_cpu())


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags as Linux lists them (/proc/cpuinfo), or None where it does not."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), None)
    return set(line.split(":", 1)[1].split()) if line else None


# Instruction-set extensions (LLVM's names) whose code faults on a CPU without them, as /proc/cpuinfo names them.
_CPUINFO_NAMES = {"ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "popcnt": "popcnt", "avx": "avx",
                  "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2",
                  "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512vl": "avx512vl",
                  "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni",
                  "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "amx-tile": "amx_tile",
                  "amx-int8": "amx_int8", "amx-bf16": "amx_bf16"}


def missing_instructions(mcpu: str) -> list[str]:
    """Extensions that LLVM uses for the x86 core `mcpu` and this CPU lacks (none known elsewhere)."""
    flags = cpu_flags()
    if flags is None or platform.machine() not in ("x86_64", "AMD64"):
        return []
    wanted = codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    return sorted(name for name, flag in _CPUINFO_NAMES.items() if name in wanted and flag not in flags)


_pool_threads: int | None = None


def set_threads(threads: int | None = None) -> int:
    """Fix the size of TVM's CPU thread pool for this process and return it.

    TVM sizes its pool once per process, from TVM_NUM_THREADS, when it first starts; its own default here is
    one thread per physical core (1 on this 2-vCPU machine), and `runtime.config_threadpool` does not resize
    it afterwards (measured). So the first call decides: `threads`, else a TVM_NUM_THREADS the user set, else
    every core this process may run on. A later call asking for another size is refused.
    """
    global _pool_threads
    if threads is not None and threads < 1:
        raise UserError("--threads must be a positive integer")
    if _pool_threads is None:
        if threads is None:
            threads = int(os.environ.get("TVM_NUM_THREADS") or default_threads())
        os.environ["TVM_NUM_THREADS"] = str(threads)
        _pool_threads = int(tvm.get_global_func("runtime.NumThreads")())
    if threads is not None and threads != _pool_threads:
        raise UserError(f"TVM's thread pool in this process already runs {_pool_threads} thread(s) and cannot be "
                        f"resized; measure {threads} in a fresh process (edgetune profile OUTDIR --threads "
                        f"{threads})")
    return _pool_threads


class HostTarget(CpuTarget):
    """This machine's CPU; `mcpu` builds for an older core of the same architecture instead (code that still
    runs here, e.g. `haswell` for AVX2-only machines)."""

    name = "host"

    def __init__(self, mcpu: str | None = None) -> None:
        missing = missing_instructions(mcpu) if mcpu else []
        if missing:
            raise UserError(f"host code for mcpu {mcpu} uses {', '.join(missing)}, which this CPU "
                            f"({detect_cpu()}) lacks: it would crash here; give an older core, or none for this one")
        self.mcpu = mcpu or detect_cpu()
        self.description = f"this machine's CPU ({platform.machine()}, LLVM mcpu={self.mcpu})"

    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target({"kind": "llvm", "mcpu": self.mcpu, "num-cores": default_threads()})

    def int8_activations(self) -> str:
        """uint8 where VNNI multiplies full bytes; 7-bit otherwise (`pmaddubsw`'s int16 sums saturate)."""
        return "uint8" if codegen.target_has_features(["avx512vnni"], self.tvm_target()) else "uint7"

    def load(self, path: Path, threads: int | None = None) -> Session:
        threads = set_threads(threads)
        module = tvm.runtime.load_module(str(path))
        device = tvm.cpu(0)
        return Session(module, device, relax.VirtualMachine(module, device),
                       device_name=f"{platform.node() or 'localhost'} {platform.machine()} ({detect_cpu()})",
                       threads=threads)
