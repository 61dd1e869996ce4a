"""64-bit ARM (aarch64) CPUs: cross-compiled on this machine, run on the device over RPC.

The code generator and the rule-based CPU schedules are the ones the host uses, at NEON's width (4 float32
lanes). The library is linked by a cross compiler (Debian's `aarch64-linux-gnu-g++` unless told otherwise), so
it cannot be opened here: validation and profiling need a device (a board, or `edgetune emulate`).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.support import cc

from ..errors import UserError
from .base import CpuTarget, Session
from .kernels import KERNEL_LIBRARY, kernel_table

DEFAULT_CROSS_COMPILER = "aarch64-linux-gnu-g++"
CROSS_COMPILER_PACKAGE = "g++-aarch64-linux-gnu"


def require_cross_compiler(compiler: str) -> None:
    """Raise `UserError` naming the fix when the aarch64 cross compiler `compiler` is not on the PATH."""
    if shutil.which(compiler) is None:
        hint = (f"install it with `apt-get install {CROSS_COMPILER_PACKAGE}`"
                if compiler == DEFAULT_CROSS_COMPILER else "check the name or the PATH")
        raise UserError(f"cross compiler {compiler} not found; {hint} or pass --cross-compiler PATH")


@dataclasses.dataclass(frozen=True)
class ArmTarget(CpuTarget):
    """An aarch64 CPU, described by its TVM target (`mtriple` aarch64-*, `mcpu`, `mattr`)."""

    name: str
    description: str
    config: dict[str, Any]  # the TVM target JSON
    cross_compiler: str = DEFAULT_CROSS_COMPILER
    runs_locally = False

    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target(self.config)

    def features(self) -> str:
        """What the code may use, e.g. `cortex-a76: neon, dotprod`."""
        attrs = self.tvm_target().attrs
        mattr = ", ".join(str(a).lstrip("+") for a in attrs.get("mattr", []) if str(a).startswith("+"))
        return f"{attrs.get('mcpu') or 'generic'}: {mattr or 'base ARMv8-A'}"

    def int8_activations(self) -> str:
        return "int8"

    def check_tools(self) -> None:
        require_cross_compiler(self.cross_compiler)

    def with_cross_compiler(self, compiler: str) -> "ArmTarget":
        return dataclasses.replace(self, cross_compiler=compiler)

    def export(self, executable: relax.VMExecutable, path: Path) -> None:
        """The model library, and its kernels' object code linked again on its own into the kernel library,
        which a remote device can time kernel by kernel (kernels.py)."""
        self.check_tools()
        link = cc.cross_compiler(self.cross_compiler)
        with tempfile.TemporaryDirectory(prefix="edgetune-export-") as workspace:
            executable.export_library(str(path), fcompile=link, workspace_dir=workspace)
            # export_library writes the compiled kernels as lib<i>.o, the VM program beside them as devc.o
            link(str(path.with_name(KERNEL_LIBRARY)), [str(obj) for obj in sorted(Path(workspace).glob("lib*.o"))])

    def artifact_files(self, library: Path) -> list[Path]:
        kernels = library.with_name(KERNEL_LIBRARY)
        return [kernels] if kernels.is_file() else []  # artifacts compiled before kernel libraries have none

    def kernel_table(self, mod: tvm.IRModule) -> list[dict[str, Any]]:
        return kernel_table(mod, self.tvm_target())

    def load(self, path: Path, threads: int | None = None) -> Session:
        raise UserError(f"{self.name} code runs on an aarch64 device, not on this {platform.machine()} machine; "
                        "give one with --rpc HOST:PORT or --rpc-tracker HOST:PORT --rpc-key KEY "
                        "(`edgetune emulate` starts an emulated one)")


def _preset(name: str, board: str, mcpu: str | None, mattr: list[str]) -> ArmTarget:
    config: dict[str, Any] = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": mattr, "num-cores": 4}
    if mcpu:
        config["mcpu"] = mcpu
    target = ArmTarget(name, board, config)
    return dataclasses.replace(target, description=f"{board}; {target.features()}")


PRESETS = [
    _preset("arm64", "any 64-bit ARM core (ARMv8-A)", None, ["+neon"]),
    _preset("cortex-a53", "Cortex-A53 (Raspberry Pi 3, many small boards)", "cortex-a53", ["+neon"]),
    _preset("cortex-a72", "Cortex-A72 (Raspberry Pi 4)", "cortex-a72", ["+neon"]),
    _preset("cortex-a76", "Cortex-A76 (Raspberry Pi 5)", "cortex-a76", ["+neon", "+dotprod"]),
    _preset("neoverse-n1", "Neoverse N1 (AWS Graviton2, Ampere Altra)", "neoverse-n1", ["+neon", "+dotprod"]),
]


def aarch64_tags() -> list[str]:
    """TVM's target tags for aarch64 boards, accepted as target names."""
    return sorted(name for name, config in tvm.target.tag.list_tags().items() if _is_aarch64(config))


def from_tvm(name: str) -> ArmTarget | None:
    """The target that a TVM tag or raw TVM target JSON names; None when `name` is neither."""
    if name.lstrip().startswith("{"):
        try:
            config = json.loads(name)
        except json.JSONDecodeError as exc:
            raise UserError(f"target {name!r} is not valid JSON ({exc.msg}); quote it whole on the command "
                            "line") from None
        origin = "TVM target JSON"
    elif name in tvm.target.tag.list_tags():
        config, origin = name, f"TVM tag {name}"
    else:
        return None
    try:
        exported = dict(tvm.target.Target(config).export())
    except (ValueError, TypeError, tvm.error.TVMError) as exc:
        raise UserError(f"target {name!r} is not a valid TVM target: {str(exc).splitlines()[0]}") from None
    if not _is_aarch64(exported):
        raise UserError(f"target {name!r} is not a 64-bit ARM (aarch64) LLVM target; TVM tags and JSON are "
                        "accepted for aarch64 only (use -t host for this machine)")
    target = ArmTarget(name, origin, exported)
    return dataclasses.replace(target, description=f"{origin}; {target.features()}")


def _is_aarch64(config: Any) -> bool:
    attrs = config.export() if hasattr(config, "export") else config
    return attrs.get("kind") == "llvm" and str(attrs.get("mtriple", "")).startswith("aarch64")
