"""NVIDIA GPUs through CUDA: built anywhere (device code compiled without a GPU), run where a GPU is.

The toolchain is the `edgetune[cuda]` extra's pip wheels, set up by `edgetune/_cuda_env.py` before TVM is
imported. Kernels get DLight's GPU rules. One architecture compiles through NVRTC (TVM's default); several
(the multi-architecture preset) through nvcc into one fatbin, plus PTX for GPUs newer than the list. Every
exported library is scanned for its device code and refused when an architecture it was built for is missing,
since TVM without its CUDA runtime silently exports CUDA source instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from pathlib import Path
from typing import Any, Iterator

import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import dlight
from tvm.support import cc, nvcc

from .. import _cuda_env
from ..errors import UserError
from .arm import require_cross_compiler
from .base import Session, Target
from .device_code import device_architectures
from .rules import apply_rules

# What every CUDA GPU since Volta offers a kernel (MetaSchedule needs the two limits to tune).
GPU_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152, "thread_warp_size": 32}
X86_HOST = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
JETSON_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}

# nvcc -gencode options for the build in progress; None: one architecture, TVM's own NVRTC compile.
_GENCODE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("edgetune_cuda_gencode", default=None)
_TVM_CUDA_COMPILE = tvm.get_global_func("tvm_callback_cuda_compile")


@tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
def _compile_cuda(code: str) -> bytes:
    """TVM's hook for generated CUDA source: a fatbin for several architectures, else TVM's default."""
    gencode = _GENCODE.get()
    if gencode is None:
        return _TVM_CUDA_COMPILE(code)
    return nvcc.compile_cuda(code, target_format="fatbin", arch=gencode, compiler="nvcc")


@dataclasses.dataclass(frozen=True)
class CudaTarget(Target):
    """CUDA code for the SM architectures `archs` (lowest first; kernels use only what the lowest has)."""

    name: str
    description: str
    archs: tuple[int, ...]
    ptx: bool = False  # also PTX of the newest architecture, which the driver compiles for newer GPUs
    host: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(X86_HOST))
    cross_compiler: str | None = None  # links the host side for another CPU (Jetson's aarch64)

    precisions = ("fp32", "fp16")
    device_type = "cuda"

    @property
    def runs_locally(self) -> bool:  # type: ignore[override]
        return self.cross_compiler is None and tvm.cuda(0).exist

    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target({"kind": "cuda", "arch": f"sm_{self.archs[0]}", **GPU_LIMITS}, host=self.host)

    def device_code(self) -> list[str]:
        """The architectures the library must carry code for: `sm_XX` SASS, and `compute_XX` PTX."""
        return [f"sm_{a}" for a in self.archs] + ([f"compute_{self.archs[-1]}"] if self.ptx else [])

    def check_tools(self) -> None:
        if _cuda_env.ENV.problem:
            raise UserError(_cuda_env.ENV.problem)
        if self.cross_compiler is not None:
            require_cross_compiler(self.cross_compiler)

    def with_cross_compiler(self, compiler: str) -> "CudaTarget":
        if self.cross_compiler is None:
            return super().with_cross_compiler(compiler)
        return dataclasses.replace(self, cross_compiler=compiler)

    def unavailable_reason(self) -> str:
        if self.cross_compiler is not None:
            return f"{self.name} libraries run on the Jetson's aarch64 CPU and its GPU, not on this machine"
        return ("no CUDA GPU on this machine (tvm.cuda(0).exist is False) and no device was given (--rpc HOST:PORT "
                "of a GPU machine running `python -m tvm.exec.rpc_server`)")

    def schedule(self, mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, str | None]]:
        rules = [dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(), dlight.gpu.GeneralReduction(),
                 dlight.gpu.Fallback()]
        return apply_rules(mod, self.tvm_target(), rules)

    def build(self, mod: tvm.IRModule) -> relax.VMExecutable:
        target = self.tvm_target()
        with self._compiling(), target:  # the compile hook reads the architecture from the current target
            return tvm.compile(mod, target=target)

    @contextlib.contextmanager
    def _compiling(self) -> Iterator[None]:
        """Routes device code through nvcc with one -gencode per architecture, when there are several."""
        gencode = None
        if len(self.archs) > 1 or self.ptx:
            gencode = [opt for a in self.archs for opt in ("-gencode", f"arch=compute_{a},code=sm_{a}")]
            if self.ptx:
                gencode += ["-gencode", f"arch=compute_{self.archs[-1]},code=compute_{self.archs[-1]}"]
        token = _GENCODE.set(gencode)
        try:
            yield
        finally:
            _GENCODE.reset(token)

    def export(self, executable: relax.VMExecutable, path: Path) -> None:
        """Write the library, then refuse it (deleted, UserError) unless it holds every architecture's code."""
        fcompile = cc.cross_compiler(self.cross_compiler) if self.cross_compiler else None
        executable.export_library(str(path), fcompile=fcompile)
        found = device_architectures(path)
        missing = [arch for arch in self.device_code() if arch not in found]
        if missing:
            Path(path).unlink(missing_ok=True)
            cause = _cuda_env.ENV.problem or "TVM's CUDA runtime was not loaded"
            raise UserError(f"the {self.name} library holds no device code for {', '.join(missing)} (found: "
                            f"{', '.join(found) or 'none, only CUDA source'}): {cause}; with "
                            f"{_cuda_env.INSTALL_HINT} and edgetune imported before tvm it is compiled")

    def runs_on(self, compute_version: str) -> bool:
        """Whether a GPU of this compute capability (e.g. "8.6") can run the library: SASS of the same major
        and an equal or lower minor version, or PTX of an equal or lower version."""
        major, minor = (int(part) for part in compute_version.split("."))
        sm = major * 10 + minor
        sass = any(a // 10 == major and a <= sm for a in self.archs)
        return sass or (self.ptx and self.archs[-1] <= sm)

    def load(self, path: Path, threads: int | None = None) -> Session:
        if threads is not None:
            raise UserError("--threads applies to CPU targets; a CUDA library runs on the GPU")
        device = tvm.device(self.device_type, 0)
        if not self.runs_locally:
            raise UserError(f"cannot run {self.name}: {self.unavailable_reason()}")
        if not self.runs_on(device.compute_version):
            raise UserError(f"this GPU ({device.device_name}, compute capability {device.compute_version}) "
                            f"cannot run {self.name} code ({', '.join(self.device_code())}); compile for it with "
                            f"-t cuda-sm{device.compute_version.replace('.', '')} or -t cuda-multi")
        module = tvm.runtime.load_module(str(path))
        return Session(module, device, relax.VirtualMachine(module, device),
                       device_name=f"{device.device_name} (compute capability {device.compute_version})",
                       threads=1, kernels_skipped="CUDA kernels run asynchronously: host-side timing around each "
                                                  "launch measures the launch, not the kernel")


def _preset(arch: int, gpus: str, **fields: Any) -> CudaTarget:
    return CudaTarget(f"cuda-sm{arch}", f"{gpus}; CUDA sm_{arch}", (arch,), **fields)


PRESETS = [
    _preset(75, "NVIDIA T4, RTX 20xx (Turing)"),
    _preset(80, "NVIDIA A100, A30 (Ampere)"),
    _preset(86, "NVIDIA RTX 30xx, A10, A40 (Ampere)"),
    _preset(87, "NVIDIA Jetson AGX Orin / Orin Nano (aarch64 host)", host=dict(JETSON_HOST),
            cross_compiler="aarch64-linux-gnu-g++"),
    _preset(89, "NVIDIA L4, RTX 40xx (Ada)"),
    _preset(90, "NVIDIA H100, H200 (Hopper)"),
    CudaTarget("cuda-multi", "any NVIDIA GPU from Turing on; CUDA sm_75, sm_80, sm_86, sm_89, sm_90 + PTX "
               "compute_90 in one fatbin", (75, 80, 86, 89, 90), ptx=True),
]
