"""The host CPU: x86-64 (or whatever this machine is) through LLVM, tuned to the detected core."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

import tvm
from tvm import relax
from tvm.target import codegen

from .base import Session, Target, default_threads
from .cpu_schedule import schedule_cpu


@lru_cache(maxsize=1)
def detect_cpu() -> str:
    """LLVM's name for this machine's core (e.g. `znver4`, `skylake-avx512`)."""
    return str(codegen.llvm_get_system_cpu())


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool for this process (mode 1: use the big cores)."""
    tvm.get_global_func("runtime.config_threadpool")(1, threads)


class HostTarget(Target):
    name = "host"

    def __init__(self) -> None:
        self.description = f"this machine's CPU ({platform.machine()}, LLVM mcpu={detect_cpu()})"

    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target({"kind": "llvm", "mcpu": detect_cpu(), "num-cores": default_threads()})

    def schedule(self, mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, str | None]]:
        return schedule_cpu(mod, self.tvm_target())

    def load(self, path: Path, threads: int | None = None) -> Session:
        threads = threads or default_threads()
        set_threads(threads)
        module = tvm.runtime.load_module(str(path))
        device = tvm.cpu(0)
        return Session(module, device, relax.VirtualMachine(module, device),
                       device_name=f"{platform.node() or 'localhost'} {platform.machine()} ({detect_cpu()})",
                       threads=threads)
