"""VTA hardware configuration: the `vta_config.json` keys plus the clock, bus and timing constants.

Every width, depth and element size that the ISA, the simulator and the compiler use is derived here from the
handful of log2 keys, so that a different configuration changes all of them consistently (as upstream
`pkg_config.py` did). Timing constants live here too, so that they can be fitted later without code changes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ...errors import UserError

UOP_BITS = 32
INSN_BITS = 128
LOOP_ITER_BITS = 14


class VTAConfigError(UserError):
    """A VTA configuration that the hardware (or this simulator) cannot have."""


# JSON key -> dataclass field, as in upstream vta_config.json (HW_FREQ and LOG_BUS_WIDTH come from pkg_config).
_JSON_KEYS = {
    "TARGET": "target", "HW_VER": "hw_ver", "LOG_INP_WIDTH": "log_inp_width", "LOG_WGT_WIDTH": "log_wgt_width",
    "LOG_ACC_WIDTH": "log_acc_width", "LOG_BATCH": "log_batch", "LOG_BLOCK": "log_block",
    "LOG_UOP_BUFF_SIZE": "log_uop_buff_size", "LOG_INP_BUFF_SIZE": "log_inp_buff_size",
    "LOG_WGT_BUFF_SIZE": "log_wgt_buff_size", "LOG_ACC_BUFF_SIZE": "log_acc_buff_size",
    "HW_FREQ": "clock_mhz", "LOG_BUS_WIDTH": "log_bus_width",
}


@dataclass(frozen=True)
class VTAConfig:
    """One VTA instance. Defaults are the released 1x16x16 int8 design on a 100 MHz PYNQ-class part."""

    target: str = "sim"
    hw_ver: str = "0.0.2"
    log_inp_width: int = 3
    log_wgt_width: int = 3
    log_acc_width: int = 5
    log_batch: int = 0
    log_block: int = 4
    log_uop_buff_size: int = 15
    log_inp_buff_size: int = 15
    log_wgt_buff_size: int = 18
    log_acc_buff_size: int = 17
    clock_mhz: float = 100.0
    log_bus_width: int = 6  # AXI data bus in bits, log2 (64 bit on Zynq-7000, 128 on UltraScale+)
    # Timing model constants (cycles); see timing.py for how each is used.
    gemm_pipeline_cycles: int = 8
    alu_ii: int = 2  # HLS ALU initiation interval (tensor-tensor and immediate alike)
    alu_pipeline_cycles: int = 8
    dma_request_cycles: int = 48  # AXI read/write latency paid once per DMA row (burst)
    fetch_cycles_per_insn: int = 0  # 0: derived from the bus width (16 B per instruction)
    finish_cycles: int = 1
    cmd_queue_depth: int = 512
    dep_queue_depth: int = 1024

    def __post_init__(self) -> None:
        if (self.log_inp_width, self.log_wgt_width, self.log_acc_width) != (3, 3, 5):
            raise VTAConfigError(
                f"VTA config widths inp/wgt/acc = 2^{self.log_inp_width}/2^{self.log_wgt_width}/"
                f"2^{self.log_acc_width} bits: only int8 x int8 -> int32 (3/3/5) is supported")
        if not 0 <= self.log_batch <= 4 or not 1 <= self.log_block <= 6:
            raise VTAConfigError(f"VTA config LOG_BATCH={self.log_batch} LOG_BLOCK={self.log_block}: "
                                 "need 0 <= LOG_BATCH <= 4 and 1 <= LOG_BLOCK <= 6")
        if not 3 <= self.log_bus_width <= 10 or self.clock_mhz <= 0:
            raise VTAConfigError(f"VTA config bus 2^{self.log_bus_width} bits at {self.clock_mhz} MHz: "
                                 "need 3 <= LOG_BUS_WIDTH <= 10 and a positive clock")
        for name in ("uop", "inp", "wgt", "acc"):
            depth = self.depth(name)
            if depth < 2:
                raise VTAConfigError(f"VTA config LOG_{name.upper()}_BUFF_SIZE="
                                     f"{getattr(self, f'log_{name}_buff_size')} gives a {name} buffer of "
                                     f"{depth} element(s); it must hold at least 2")
        if self.uop_dst_bits + self.uop_src_bits + self.uop_wgt_bits > UOP_BITS:
            raise VTAConfigError(f"VTA config buffers too deep: micro-op indices need "
                                 f"{self.uop_dst_bits}+{self.uop_src_bits}+{self.uop_wgt_bits} bits > 32")
        gemm_low = 7 + 1 + self.log_uop_depth + (self.log_uop_depth + 1) + 2 * LOOP_ITER_BITS
        gemm_high = 2 * (self.log_acc_depth + self.uop_src_bits + self.log_wgt_depth)
        alu_high = 2 * (self.log_acc_depth + self.uop_src_bits) + 3 + 1 + 16
        if gemm_low > 64 or gemm_high > 64 or alu_high > 64:
            raise VTAConfigError("VTA config buffers too deep: GEMM/ALU fields no longer fit a 128-bit "
                                 "instruction (two 64-bit words)")
        for name in ("gemm_pipeline_cycles", "alu_pipeline_cycles", "dma_request_cycles", "fetch_cycles_per_insn",
                     "finish_cycles"):
            if getattr(self, name) < 0:
                raise VTAConfigError(f"VTA config {name}={getattr(self, name)} must be >= 0")
        for name in ("alu_ii", "cmd_queue_depth", "dep_queue_depth"):
            if getattr(self, name) < 1:
                raise VTAConfigError(f"VTA config {name}={getattr(self, name)} must be >= 1")

    # --- shapes -------------------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return 1 << self.log_batch

    @property
    def block(self) -> int:
        """BLOCK_IN = BLOCK_OUT (the upstream JSON has one LOG_BLOCK key)."""
        return 1 << self.log_block

    @property
    def block_in(self) -> int:
        return self.block

    @property
    def block_out(self) -> int:
        return self.block

    @property
    def log_out_width(self) -> int:
        return self.log_inp_width

    @property
    def log_out_buff_size(self) -> int:
        return self.log_acc_buff_size + self.log_out_width - self.log_acc_width

    # --- element bytes and buffer depths --------------------------------------------------------------------
    def elem_bytes(self, buffer: str) -> int:
        """Bytes of one SRAM element of `buffer` (uop, inp, wgt, acc, out), also the DRAM address unit."""
        bits = {
            "uop": UOP_BITS,
            "inp": self.batch * self.block_in << self.log_inp_width,
            "wgt": self.block_out * self.block_in << self.log_wgt_width,
            "acc": self.batch * self.block_out << self.log_acc_width,
            "out": self.batch * self.block_out << self.log_out_width,
        }[buffer]
        return bits // 8

    def buff_bytes(self, buffer: str) -> int:
        log = {"uop": self.log_uop_buff_size, "inp": self.log_inp_buff_size, "wgt": self.log_wgt_buff_size,
               "acc": self.log_acc_buff_size, "out": self.log_out_buff_size}[buffer]
        return 1 << log

    def depth(self, buffer: str) -> int:
        return self.buff_bytes(buffer) // self.elem_bytes(buffer)

    @property
    def log_uop_depth(self) -> int:
        return self.depth("uop").bit_length() - 1

    @property
    def log_inp_depth(self) -> int:
        return self.depth("inp").bit_length() - 1

    @property
    def log_wgt_depth(self) -> int:
        return self.depth("wgt").bit_length() - 1

    @property
    def log_acc_depth(self) -> int:
        return self.depth("acc").bit_length() - 1

    # --- micro-op fields ----------------------------------------------------------------------------------
    @property
    def uop_dst_bits(self) -> int:
        return self.log_acc_depth

    @property
    def uop_src_bits(self) -> int:
        """The source index addresses INP (GEMM) or ACC (ALU), so it is as wide as the deeper of the two."""
        return max(self.log_acc_depth, self.log_inp_depth)

    @property
    def uop_wgt_bits(self) -> int:
        return self.log_wgt_depth

    # --- performance --------------------------------------------------------------------------------------
    @property
    def bus_bytes(self) -> int:
        return (1 << self.log_bus_width) // 8

    @property
    def macs_per_cycle(self) -> int:
        return self.batch * self.block_in * self.block_out

    @property
    def peak_gops(self) -> float:
        return 2 * self.macs_per_cycle * self.clock_mhz / 1e3

    @property
    def fetch_cycles(self) -> int:
        return self.fetch_cycles_per_insn or -(-INSN_BITS // 8 // self.bus_bytes)

    @property
    def bitstream_name(self) -> str:
        return (f"{self.batch}x{self.block}_i{1 << self.log_inp_width}w{1 << self.log_wgt_width}"
                f"a{1 << self.log_acc_width}_{self.log_uop_buff_size}_{self.log_inp_buff_size}_"
                f"{self.log_wgt_buff_size}_{self.log_acc_buff_size}")

    # --- (de)serialisation --------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, source: str | Path | Mapping[str, Any], **overrides: Any) -> "VTAConfig":
        """Read upstream-style JSON (keys like LOG_BLOCK) or this class's own field names."""
        if not isinstance(source, Mapping):
            try:
                source = json.loads(Path(source).read_text())
            except (OSError, ValueError) as exc:
                raise VTAConfigError(f"cannot read VTA config {source}: {exc}") from None
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in source.items():
            name = _JSON_KEYS.get(key, key)
            if name not in fields:
                raise VTAConfigError(f"unknown VTA config key {key!r}")
            values[name] = value
        values.update(overrides)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        names = {v: k for k, v in _JSON_KEYS.items()}
        return {names.get(f.name, f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "VTAConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, VTAConfig] = {
    "vta-sim": VTAConfig(target="sim", clock_mhz=100.0, log_bus_width=6),
    "vta-ultra96": VTAConfig(target="ultra96", clock_mhz=333.0, log_bus_width=7),
}


def load_config(spec: str) -> VTAConfig:
    """A preset name or the path of a vta_config.json."""
    if spec in PRESETS or not Path(spec).exists():
        return get_config(spec)
    return VTAConfig.from_json(spec)


def get_config(name: str) -> VTAConfig:
    """A preset by name (vta-sim: PYNQ-class 100 MHz, 64-bit bus; vta-ultra96: 333 MHz, 128-bit bus)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise VTAConfigError(f"unknown VTA preset {name!r}; choose one of {', '.join(PRESETS)} "
                             "or give the path of a vta_config.json") from None
