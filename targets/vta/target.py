"""The `vta-sim` / `vta-ultra96` targets: int8 convolutions and dense layers on the VTA accelerator, the rest
on the host CPU.

Quantization (edgetune's int8 pipeline, with what VTA needs: symmetric int8 activations, one power-of-two
scale per weight tensor so requantization is a single shift, and every unit's output stored as int8) hands
each integer unit it can to `VTAOffload`, which compiles it with the VTA back end and leaves in its place a
call to a packed function named after the program's content. The library is the host build; the instruction
streams and constants are artifact files next to it (`vta.json`, `vta-<i>.insn`, `vta-<i>.npz`), covered by
the manifest's checksums. Loading recompiles each program from its constants and tiling, checks that the
instruction bytes are the recorded ones, and registers the functions, which run the program on edgetune's
functional simulator; the latency log carries the timing model's cycles per layer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from ...errors import UserError
from ...passes.quantize import IntegerUnit
from ..base import Session
from ..host import HostTarget
from ..profiling import LatencyReport, ProfileConfig
from .compiler import TilingChooser, compile_conv2d, compile_dense
from .config import VTAConfig, get_config
from .tiler import Tiling
from .workload import Requantize

LAYERS = "vta.json"


@dataclass
class OffloadedLayer:
    """One unit compiled for VTA: what it is, how it was tiled, and its program."""

    name: str  # the packed function's name
    unit: str
    kind: str
    data_shape: list[int]
    strides: list[int]
    padding: list[int]
    requant: dict
    tiling: dict
    instructions_sha256: str
    estimate: dict  # the timing model's report for one run

    def files(self, index: int) -> tuple[str, str]:
        return f"vta-{index}.insn", f"vta-{index}.npz"


def _program(kind: str, data_shape: Sequence[int], weight: np.ndarray, bias: np.ndarray, requant: Requantize,
             config: VTAConfig, strides: Sequence[int], padding: Sequence[int],
             tiling: Tiling | TilingChooser | None = None):
    if kind == "dense":
        return compile_dense(data_shape[0], np.ascontiguousarray(weight.T), bias, requant, config, tiling=tiling)
    return compile_conv2d(data_shape, weight, bias, requant, config, strides, padding, tiling=tiling)


def _conv_program(program):
    """The conv2d program behind a dense one (a dense layer runs as a 1x1 convolution)."""
    return getattr(program, "conv", program)


class VTAOffload:
    """The `Accelerator` of the quantization plan: compiles each unit VTA can run, tiled by `choose` (the
    autotune stage's records) or by the back end's default."""

    def __init__(self, config: VTAConfig, choose: TilingChooser | None = None):
        self.config, self.choose = config, choose
        self.layers: list[OffloadedLayer] = []
        self.programs: list[Any] = []
        self.constants: list[dict[str, np.ndarray]] = []

    def offload(self, unit: IntegerUnit) -> relax.Expr | None:
        data_shape = [int(d) for d in unit.data.ty.shape.values]
        if str(unit.data.ty.dtype) != "int8" or unit.out.dtype != "int8":
            return None
        strides, padding = [1, 1], [0, 0]
        if unit.kind == "conv2d":
            attrs = unit.attrs
            top, left, bottom, right = (int(p) for p in attrs.padding)
            if (top, left) != (bottom, right) or any(int(d) != 1 for d in attrs.dilation):
                return None
            strides, padding = [int(s) for s in attrs.strides], [top, left]
        try:
            requant = Requantize(unit.shift, True, unit.qmin, unit.qmax)
            program = _program(unit.kind, data_shape, unit.weight, unit.offset, requant, self.config, strides,
                               padding, self.choose)
        except ValueError:  # outside what the VTA back end takes (shapes, shift range): stays on the CPU
            return None
        conv = _conv_program(program)
        instructions = conv.instruction_bytes()
        digest = hashlib.sha256(instructions + unit.weight.tobytes() + unit.offset.tobytes()).hexdigest()
        layer = OffloadedLayer(f"edgetune.vta.{digest[:20]}", unit.name, unit.kind, data_shape, strides, padding,
                               asdict(requant), asdict(conv.tiling), hashlib.sha256(instructions).hexdigest(),
                               conv.timing.as_dict())
        self.layers.append(layer)
        self.programs.append(program)
        self.constants.append({"weight": unit.weight, "bias": unit.offset})
        out_shape = ([data_shape[0], unit.weight.shape[0], conv.workload.out_h, conv.workload.out_w]
                     if unit.kind == "conv2d" else [data_shape[0], unit.weight.shape[1]])
        return relax.call_dps_packed(layer.name, relax.Tuple([unit.data]), relax.TensorType(out_shape, "int8"))


class _LayerStats:
    """Per offloaded layer: calls and the simulator's counters of the last run."""

    def __init__(self, layer: OffloadedLayer):
        self.layer = layer
        self.calls = 0
        self.counters: dict[str, int] = {}

    def to_dict(self) -> dict[str, Any]:
        estimate = self.layer.estimate
        return {"layer": self.layer.unit, "kind": self.layer.kind, "calls": self.calls,
                "cycles": estimate["cycles"], "latency_ms": estimate["latency_ms"],
                "gemm_utilisation": estimate["gemm_utilisation"], "gops": estimate["gops"],
                "dram_bytes": {k: v for k, v in self.counters.items() if k.endswith("nbytes")},
                "gemm_ops": self.counters.get("gemm_counter", 0), "alu_ops": self.counters.get("alu_counter", 0)}


class VTATarget(HostTarget):
    """Host CPU plus a simulated VTA accelerator (a preset of `targets/vta/config.py`)."""

    def __init__(self, preset: str):
        super().__init__()
        self.config = get_config(preset)
        self.name = preset
        block = self.config.block
        self.description = (f"VTA accelerator ({preset}: {block}x{block} int8 GEMM at {self.config.clock_mhz:g} "
                            f"MHz) on edgetune's simulator, other operators on {self.description}")
        self._offload: VTAOffload | None = None
        self._stats: list[_LayerStats] = []

    def channel_block(self) -> int:
        return 0  # the CPU part stays in NCHW, the layout VTA's calls take

    def int8_activations(self) -> str:
        return "int8"

    def quantization_overrides(self) -> dict[str, Any]:
        return {"power_of_two": True, "per_channel_weights": False, "quantize_outputs": True}

    def requires_quantization(self) -> str | None:
        return f"{self.name} runs int8 layers: add --quantize int8 --calibration DATA"

    def accelerator(self, tuner: TilingChooser | None = None) -> VTAOffload:
        self._offload = VTAOffload(self.config, tuner)
        return self._offload

    def export(self, executable: relax.VMExecutable, path: Path) -> None:
        super().export(executable, path)
        offload = self._offload or VTAOffload(self.config)
        for index, (layer, program, constants) in enumerate(zip(offload.layers, offload.programs, offload.constants)):
            insn, npz = layer.files(index)
            _conv_program(program).write_instructions(path.parent / insn)
            np.savez(path.parent / npz, **constants)
        (path.parent / LAYERS).write_text(json.dumps({"config": self.name, "layers": [asdict(l) for l in
                                                                                       offload.layers]}, indent=1))

    def artifact_files(self, library: Path) -> list[Path]:
        table = json.loads((library.parent / LAYERS).read_text())
        names = [name for i in range(len(table["layers"])) for name in OffloadedLayer(**table["layers"][i]).files(i)]
        return [library.parent / LAYERS, *(library.parent / n for n in names)]

    def load(self, path: Path, threads: int | None = None) -> Session:
        self._stats = [self._register(path.parent, index, layer) for index, layer in enumerate(self._layers(path))]
        session = super().load(path, threads)
        session.device_name = f"{session.device_name} + VTA simulator ({self.name})"
        session.emulated = True  # wall times measure the simulator; the device estimate is the timing model's
        return session

    def profile(self, session: Session, arrays: Sequence[np.ndarray], config: ProfileConfig) -> LatencyReport:
        report = super().profile(session, arrays, config)
        report.accelerator = [stats.to_dict() for stats in self._stats]
        return report

    def _layers(self, path: Path) -> list[OffloadedLayer]:
        try:
            table = json.loads((path.parent / LAYERS).read_text())
            return [OffloadedLayer(**layer) for layer in table["layers"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path.parent / LAYERS} is missing or damaged ({exc}); compile the model again") from None

    def _register(self, folder: Path, index: int, layer: OffloadedLayer) -> _LayerStats:
        """Rebuild the layer's program from its constants and tiling, check it is the recorded stream, and
        register the packed function the library calls."""
        _, npz = layer.files(index)
        with np.load(folder / npz, allow_pickle=False) as constants:
            weight, bias = constants["weight"], constants["bias"]
        program = _program(layer.kind, layer.data_shape, weight, bias, Requantize(**layer.requant), self.config,
                           layer.strides, layer.padding, Tiling(**layer.tiling))
        if hashlib.sha256(_conv_program(program).instruction_bytes()).hexdigest() != layer.instructions_sha256:
            raise UserError(f"VTA layer {layer.unit}: the rebuilt instruction stream differs from the recorded one "
                            "(another edgetune version?); compile the model again")
        stats = _LayerStats(layer)

        def run(data: tvm.runtime.Tensor, out: tvm.runtime.Tensor) -> None:
            result = program.run(data.numpy())
            out.copyfrom(np.ascontiguousarray(result.output))
            stats.calls += 1
            stats.counters = result.counters.as_dict()

        tvm_ffi.register_global_func(layer.name, run, override=True)
        return stats
