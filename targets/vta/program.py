"""A compiled VTA operator: its instruction stream, micro-ops and constant DRAM image, and how to run it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .codegen import Stream
from .config import VTAConfig
from .isa import disassemble, instructions_to_bytes, uops_to_bytes
from .packing import pack_activation, unpack_activation
from .simulator import DRAM, Counters, Simulator
from .tiler import Tiling
from .timing import TimingReport, estimate
from .workload import Conv2dWorkload, Requantize


@dataclass
class RunResult:
    output: np.ndarray  # int8
    counters: Counters  # from executing the stream on the functional simulator
    timing: TimingReport  # from the timing model on the same stream


class VTAProgram:
    """An int8 conv2d compiled for VTA: run(int8 NCHW input) -> int8 NCHW output, counters and timing."""

    def __init__(self, config: VTAConfig, workload: Conv2dWorkload, tiling: Tiling, requant: Requantize,
                 stream: Stream, constants: dict[str, np.ndarray]):
        self.config, self.workload, self.tiling, self.requant = config, workload, tiling, requant
        self.stream, self.constants = stream, constants

    @property
    def instructions(self):
        return self.stream.insns

    def instruction_bytes(self) -> bytes:
        """The stream as the hardware fetches it: 16 little-endian bytes per instruction."""
        return instructions_to_bytes(self.stream.insns, self.config)

    def write_instructions(self, path: str | Path) -> None:
        """The binary stream, as `edgetune vta disasm` reads it (written atomically)."""
        from ...artifact import atomic_write

        with atomic_write(Path(path), "wb") as handle:
            handle.write(self.instruction_bytes())

    def uop_bytes(self) -> bytes:
        return uops_to_bytes(self.stream.uops, self.config)

    def disassemble(self) -> str:
        return disassemble(self.stream.insns)

    @functools.cached_property
    def timing(self) -> TimingReport:
        return estimate(self.stream.insns, self.config)

    def _dram_image(self, data: np.ndarray) -> DRAM:
        dram = DRAM()
        for name, (address, size) in self.stream.layout.items():
            assert dram.alloc(size) == address, "the layout is the allocator's own order"
        contents = dict(self.constants, input=pack_activation(data, self.config.block),
                        uop=np.frombuffer(self.uop_bytes(), dtype=np.uint32))
        for name, value in contents.items():
            dram.write(self.stream.layout[name][0], value)
        return dram

    def run(self, data: np.ndarray) -> RunResult:
        wl = self.workload
        expected = (wl.batch, wl.in_channels, wl.height, wl.width)
        if data.shape != expected or data.dtype != np.int8:
            raise ValueError(f"VTA conv2d input must be int8 {expected}, got {data.dtype} {data.shape}")
        dram = self._dram_image(data)
        counters = Simulator(self.config, dram).run(self.stream.insns)
        address, size = self.stream.layout["output"]
        block = self.config.block
        packed = dram.read(address, size).view(np.int8).reshape(
            wl.batch, wl.oc_blocks(block), wl.out_h, wl.out_w, 1, block)
        return RunResult(unpack_activation(packed, wl.out_channels), counters, self.timing)


