"""The interface every target implements: build, export, load, run, profile.

A target turns a Relax module (after edgetune's passes) into a VM executable, writes it as a shared library,
opens that library on its device (locally, or on a board over RPC), runs it and measures it. The compile
driver only speaks this interface, so a new target is one new module plus a registry entry.
"""

from __future__ import annotations

import abc
import contextlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import tvm
from tvm import relax, s_tir

from ..errors import UserError
from .cpu_schedule import schedule_cpu, tuning_space, vector_lanes
from .profiling import KernelTimer, LatencyReport, ProfileConfig, kernel_medians, measure


@dataclass
class Session:
    """A loaded library on its device, ready to run."""

    module: Any  # tvm.runtime.Module (local or remote)
    device: Any  # tvm.runtime.Device
    vm: Any  # relax.VirtualMachine
    device_name: str
    threads: int
    emulated: bool = False  # the device is an emulator: its timings are not device latency
    kernels_skipped: str = ""  # why this session cannot give a per-kernel breakdown (empty: it can)
    # Times each kernel alone, for a session whose VM cannot be instrumented (a remote device; see kernels.py).
    kernel_timer: KernelTimer | None = None

    def running(self) -> ContextManager[None]:
        """Wraps every call into the library; a remote session turns a lost device into a clear error."""
        return contextlib.nullcontext()

    def request(self, expected_s: float = 0.0) -> ContextManager[None]:
        """Wraps one request to the device, expected to take `expected_s`: a remote session fails it when the
        device has not answered within its timeout beyond that (a local one has nothing to wait for)."""
        return contextlib.nullcontext()


class Target(abc.ABC):
    """A named deployment target (a preset in the registry)."""

    name: str
    description: str
    # False for code this machine cannot execute (another architecture): it then runs only on a device
    # given over RPC, and compiling without one skips validation and profiling.
    runs_locally: bool = True
    # TVM device type its code runs on (`tvm.runtime.device(device_type, 0)`), locally or over RPC.
    device_type: str = "cpu"
    # Numeric precisions (`--precision`) its kernels can compute in; fp16 is float16 with float32 accumulation.
    precisions: tuple[str, ...] = ("fp32",)
    # The compiler linking its libraries here for another machine (None: this machine's own linker).
    cross_compiler: str | None = None

    @abc.abstractmethod
    def tvm_target(self) -> tvm.target.Target:
        """The TVM target the code is generated for."""

    def target_json(self) -> dict[str, Any]:
        """The TVM target as plain JSON (what the manifest and `edgetune targets` show)."""
        return target_to_json(self.tvm_target().export())

    def unavailable_reason(self) -> str:
        """Why this target's code cannot run on this machine (said when validation and profiling are skipped)."""
        return (f"{self.name} code cannot run on this {platform.machine()} machine and no device was given "
                "(--rpc HOST:PORT, or --rpc-tracker HOST:PORT --rpc-key KEY; `edgetune emulate` starts an "
                "emulated one)")

    def check_tools(self) -> None:
        """Raise `UserError` before any work when a tool this target builds with is missing."""

    def with_cross_compiler(self, compiler: str) -> "Target":
        """This target, exporting with `compiler`; only cross targets have one to replace."""
        raise UserError(f"target {self.name} builds for this machine and has no cross compiler to replace; "
                        "drop --cross-compiler or pick a cross target such as arm64")

    def channel_block(self) -> int:
        """Activation channel block (NCHW[x]c) this target's conv schedules want; 0 keeps plain NCHW."""
        return 0

    def quantization_overrides(self) -> dict[str, Any]:
        """`QuantizeConfig` fields this target fixes (an accelerator's arithmetic), on top of the user's."""
        return {}

    def requires_quantization(self) -> str | None:
        """Why a float build makes no sense for this target (the error to show), or None."""
        return None

    def accelerator(self, tuner: Any = None) -> Any:
        """A fresh `passes.quantize.Accelerator` taking the integer units this target offloads, or None.
        `tuner` (from the autotune stage) makes the choices the accelerator's compiler leaves open."""
        return None

    def artifact_files(self, library: Path) -> list[Path]:
        """Files next to the exported library that belong to the artifact (checksummed with it)."""
        return []

    def kernel_table(self, mod: tvm.IRModule) -> list[dict[str, Any]] | None:
        """For the manifest: what a remote device needs to time each kernel of `mod` alone (kernels.py), for
        targets whose `export` also writes the kernel library; None for the others."""
        return None

    def int8_activations(self) -> str:
        """The 8-bit type int8 kernels take activations in: what this target's dot instructions multiply
        (uint8 by int8 on x86: VNNI / AVX2; int8 by int8 on ARM `sdot` and VTA)."""
        return "uint8"

    def schedule(self, mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, str | None]]:
        """Give the kernels this target's default schedules; returns, per kernel, the rule used (or None).

        The base target leaves kernels as they are."""
        return mod, {}

    def tuning_space(self, kernel: tvm.IRModule) -> Callable[[s_tir.Schedule], s_tir.Schedule] | None:
        """The design space tuning searches for a one-kernel module: a function scheduling a traced schedule
        with sampled decisions (a MetaSchedule `ScheduleFn`); None for MetaSchedule's generic space."""
        return None

    def build(self, mod: tvm.IRModule) -> relax.VMExecutable:
        """Lower and compile a module that went through the pass pipeline (and `schedule`)."""
        target = self.tvm_target()
        with target:
            return tvm.compile(mod, target=target)

    def export(self, executable: relax.VMExecutable, path: Path) -> None:
        """Write the executable as one self-contained shared library."""
        executable.export_library(str(path))

    @abc.abstractmethod
    def load(self, path: Path, threads: int | None = None) -> Session:
        """Open an exported library on this target's device."""

    def run(self, session: Session, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One inference; inputs in signature order, outputs as numpy arrays in graph order."""
        with session.running(), session.request():
            result = session.vm["main"](*self._to_device(session, arrays))
            return [t.numpy() for t in _flatten(result)]

    def profile(self, session: Session, arrays: Sequence[np.ndarray], config: ProfileConfig) -> LatencyReport:
        with session.running():
            with session.request():
                args = self._to_device(session, arrays)
            return measure(session, args, config)

    def compare_kernels(self, sessions: Sequence[Session], arrays: Sequence[np.ndarray], repeat: int
                        ) -> list[dict[str, float]]:
        """Builds of one model run in turns, every kernel call timed: per session, each kernel's median seconds
        per inference. Only for sessions whose VM can be instrumented (not a remote device)."""
        for session in sessions:
            if session.kernels_skipped or session.kernel_timer is not None:
                raise UserError(f"kernels cannot be timed inside the model on {session.device_name}")
        return kernel_medians([(s, self._to_device(s, arrays)) for s in sessions], repeat)

    @staticmethod
    def _to_device(session: Session, arrays: Sequence[np.ndarray]) -> list[Any]:
        return [tvm.runtime.tensor(np.asarray(a, order="C"), session.device) for a in arrays]  # keeps 0-d


class CpuTarget(Target):
    """An LLVM CPU target: conv layouts blocked to its vector width and the rule-based CPU schedules."""

    def channel_block(self) -> int:
        return vector_lanes(self.tvm_target())

    def schedule(self, mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, str | None]]:
        return schedule_cpu(mod, self.tvm_target())

    def tuning_space(self, kernel: tvm.IRModule) -> Callable[[s_tir.Schedule], s_tir.Schedule] | None:
        return tuning_space(kernel, self.tvm_target())


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (tvm.runtime.Tensor,)):
        return [value]
    out: list[Any] = []
    for item in value:
        out.extend(_flatten(item))
    return out


def target_to_json(value: Any) -> Any:
    """TVM containers and objects as JSON-ready Python values."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): target_to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        return [target_to_json(v) for v in value]
    return str(value)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
