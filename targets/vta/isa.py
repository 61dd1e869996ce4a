"""VTA instruction set: 128-bit instructions and 32-bit micro-ops, their encoding and a disassembler.

Field positions are not written down as numbers: they are packed from the widths in `VTAConfig`, in the order
of the upstream `hw_spec.h` bit-fields, never straddling bit 64 (the C structs use two uint64_t words). With the
default configuration this reproduces the bit tables of docs/vta.md section 4 exactly.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

from ...errors import UserError
from .config import INSN_BITS, LOOP_ITER_BITS, VTAConfig

INSN_BYTES = INSN_BITS // 8
UOP_BYTES = 4


class Opcode(enum.IntEnum):
    LOAD = 0
    STORE = 1
    GEMM = 2
    FINISH = 3
    ALU = 4


class MemType(enum.IntEnum):
    UOP = 0
    WGT = 1
    INP = 2
    ACC = 3
    OUT = 4
    ACC_8BIT = 5


class AluOp(enum.IntEnum):
    MIN = 0
    MAX = 1
    ADD = 2
    SHR = 3
    MUL = 4  # functional simulator only; not in the HLS or Chisel hardware


@dataclass(frozen=True, kw_only=True)
class Insn:
    """Dependency-token flags shared by every instruction; prev/next are relative to load -> compute -> store."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def with_deps(self, **flags: bool) -> "Insn":
        return dataclasses.replace(self, **flags)


@dataclass(frozen=True, kw_only=True)
class MemInsn(Insn):
    """LOAD or STORE of a 2-D strided block; addresses are in elements of the SRAM buffer named by memory_type."""

    opcode: Opcode
    memory_type: MemType
    sram_base: int
    dram_base: int
    y_size: int
    x_size: int
    x_stride: int
    y_pad_0: int = 0
    y_pad_1: int = 0
    x_pad_0: int = 0
    x_pad_1: int = 0


@dataclass(frozen=True, kw_only=True)
class _LoopInsn(Insn):
    """GEMM and ALU: two hardware loops around the micro-ops [uop_bgn, uop_end), each loop adding its factors to
    the micro-op's indices; reset writes zeros instead of computing."""

    reset: bool = False
    uop_bgn: int
    uop_end: int
    iter_out: int
    iter_in: int
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0


@dataclass(frozen=True, kw_only=True)
class GemmInsn(_LoopInsn):
    """ACC[dst] += INP[src] x WGT[wgt] (a block of multiply-accumulates per micro-op)."""

    wgt_factor_out: int = 0
    wgt_factor_in: int = 0
    opcode: Opcode = dataclasses.field(default=Opcode.GEMM, init=False)


@dataclass(frozen=True, kw_only=True)
class AluInsn(_LoopInsn):
    """ACC[dst] = op(ACC[dst], imm if use_imm else ACC[src]) over the same loop nest as GEMM."""

    alu_opcode: AluOp
    use_imm: bool = False
    imm: int = 0
    opcode: Opcode = dataclasses.field(default=Opcode.ALU, init=False)


@dataclass(frozen=True, kw_only=True)
class FinishInsn(Insn):
    opcode: Opcode = dataclasses.field(default=Opcode.FINISH, init=False)


@dataclass(frozen=True)
class Uop:
    """A micro-op: ACC destination, INP (GEMM) or ACC (ALU) source, and WGT index."""

    dst: int
    src: int
    wgt: int = 0


Instruction = Union[MemInsn, GemmInsn, AluInsn, FinishInsn]


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    signed: bool = False

    def check(self, value: int, kind: str) -> int:
        """The field's raw bits; a value that does not fit raises ValueError naming the field."""
        value = int(value)
        low, high = ((-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1) if self.signed
                     else (0, (1 << self.width) - 1))
        if not low <= value <= high:
            raise ValueError(f"{kind} field {self.name}={value} out of range [{low}, {high}] "
                             f"({self.width} bits at {self.lsb})")
        return value & ((1 << self.width) - 1)

    def extract(self, word: int) -> int:
        raw = (word >> self.lsb) & ((1 << self.width) - 1)
        return raw - (1 << self.width) if self.signed and raw >> (self.width - 1) else raw


def _pack(*words: Sequence[tuple[str, int] | tuple[str, int, bool]]) -> tuple[Field, ...]:
    """Fields laid out from bit 0 of each 64-bit word in turn, as C bit-fields in uint64_t words are."""
    fields = []
    for index, word in enumerate(words):
        lsb = 64 * index
        for name, width, *signed in word:
            fields.append(Field(name, lsb, width, bool(signed and signed[0])))
            lsb += width
        assert lsb <= 64 * (index + 1), "VTAConfig validation guarantees each word fits"
    return tuple(fields)


_PREFIX = (("opcode", 3), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1), ("push_next", 1))


@functools.lru_cache(maxsize=None)
def layouts(config: VTAConfig) -> dict[Opcode, tuple[Field, ...]]:
    """Bit layout of each instruction kind for `config` (widths from the buffer depths)."""
    mem = _pack(_PREFIX + (("memory_type", 3), ("sram_base", 16), ("dram_base", 32)),
                (("y_size", 16), ("x_size", 16), ("x_stride", 16), ("y_pad_0", 4), ("y_pad_1", 4),
                 ("x_pad_0", 4), ("x_pad_1", 4)))
    loops = _PREFIX + (("reset", 1), ("uop_bgn", config.log_uop_depth), ("uop_end", config.log_uop_depth + 1),
                       ("iter_out", LOOP_ITER_BITS), ("iter_in", LOOP_ITER_BITS))
    factors = (("dst_factor_out", config.log_acc_depth), ("dst_factor_in", config.log_acc_depth),
               ("src_factor_out", config.log_inp_depth), ("src_factor_in", config.log_inp_depth))
    gemm = _pack(loops, factors + (("wgt_factor_out", config.log_wgt_depth),
                                   ("wgt_factor_in", config.log_wgt_depth)))
    alu = _pack(loops, factors + (("alu_opcode", 3), ("use_imm", 1), ("imm", 16, True)))
    return {Opcode.LOAD: mem, Opcode.STORE: mem, Opcode.GEMM: gemm, Opcode.ALU: alu,
            Opcode.FINISH: _pack(_PREFIX)}


@functools.lru_cache(maxsize=None)
def uop_layout(config: VTAConfig) -> tuple[Field, ...]:
    return _pack((("dst", config.uop_dst_bits), ("src", config.uop_src_bits), ("wgt", config.uop_wgt_bits)))


def encode(insn: Instruction, config: VTAConfig) -> int:
    """The instruction as a 128-bit integer (bit 0 = LSB of the first little-endian 64-bit word)."""
    kind = insn.opcode.name
    word = 0
    for field in layouts(config)[insn.opcode]:
        word |= field.check(getattr(insn, field.name), kind) << field.lsb
    return word


def decode(word: int, config: VTAConfig) -> Instruction:
    """The instruction encoded in a 128-bit integer; unknown opcodes or memory types raise ValueError."""
    code = word & 0b111
    try:
        opcode = Opcode(code)
    except ValueError:
        raise ValueError(f"unknown VTA opcode {code}") from None
    values = {f.name: f.extract(word) for f in layouts(config)[opcode]}
    del values["opcode"]
    for flag in ("pop_prev", "pop_next", "push_prev", "push_next", "reset", "use_imm"):
        if flag in values:
            values[flag] = bool(values[flag])
    if opcode in (Opcode.LOAD, Opcode.STORE):
        try:
            values["memory_type"] = MemType(values["memory_type"])
        except ValueError:
            raise ValueError(f"unknown VTA memory type {values['memory_type']}") from None
        return MemInsn(opcode=opcode, **values)
    if opcode == Opcode.ALU:
        try:
            values["alu_opcode"] = AluOp(values["alu_opcode"])
        except ValueError:
            raise ValueError(f"unknown VTA ALU opcode {values['alu_opcode']}") from None
        return AluInsn(**values)
    return GemmInsn(**values) if opcode == Opcode.GEMM else FinishInsn(**values)


def encode_uop(uop: Uop, config: VTAConfig) -> int:
    word = 0
    for field in uop_layout(config):
        word |= field.check(getattr(uop, field.name), "micro-op") << field.lsb
    return word


def decode_uop(word: int, config: VTAConfig) -> Uop:
    return Uop(**{f.name: f.extract(word) for f in uop_layout(config)})


def instructions_to_bytes(insns: Iterable[Instruction], config: VTAConfig) -> bytes:
    return b"".join(encode(insn, config).to_bytes(INSN_BYTES, "little") for insn in insns)


def instructions_from_bytes(data: bytes, config: VTAConfig) -> list[Instruction]:
    if len(data) % INSN_BYTES:
        raise ValueError(f"instruction stream of {len(data)} bytes is not a multiple of {INSN_BYTES}")
    result = []
    for index in range(0, len(data), INSN_BYTES):
        try:
            result.append(decode(int.from_bytes(data[index:index + INSN_BYTES], "little"), config))
        except ValueError as exc:
            raise ValueError(f"instruction {index // INSN_BYTES}: {exc}") from None
    return result


def uops_to_bytes(uops: Iterable[Uop], config: VTAConfig) -> bytes:
    return b"".join(encode_uop(uop, config).to_bytes(UOP_BYTES, "little") for uop in uops)


def _deps(insn: Insn) -> str:
    flags = [name for name in ("pop_prev", "pop_next", "push_prev", "push_next") if getattr(insn, name)]
    return f"  deps[{','.join(flags)}]" if flags else ""


def disassemble_one(insn: Instruction) -> str:
    """One human-readable line, in the spirit of the upstream runtime's debug dump."""
    if isinstance(insn, MemInsn):
        pads = (insn.y_pad_0, insn.y_pad_1, insn.x_pad_0, insn.x_pad_1)
        text = (f"{insn.opcode.name:<6} {insn.memory_type.name:<4} sram={insn.sram_base} dram={insn.dram_base} "
                f"y={insn.y_size} x={insn.x_size} stride={insn.x_stride}")
        if any(pads):
            text += " pad(y0,y1,x0,x1)=({},{},{},{})".format(*pads)
        if insn.x_size == 0:
            text += " (no-op)"
    elif isinstance(insn, (GemmInsn, AluInsn)):
        name = "GEMM" if isinstance(insn, GemmInsn) else f"ALU    {insn.alu_opcode.name}"
        text = (f"{name:<6} {'reset ' if insn.reset else ''}uop[{insn.uop_bgn}:{insn.uop_end}] "
                f"loop {insn.iter_out}x{insn.iter_in} dst({insn.dst_factor_out},{insn.dst_factor_in}) "
                f"src({insn.src_factor_out},{insn.src_factor_in})")
        if isinstance(insn, GemmInsn):
            text += f" wgt({insn.wgt_factor_out},{insn.wgt_factor_in})"
        elif insn.use_imm:
            text += f" imm={insn.imm}"
    else:
        text = "FINISH"
    return text + _deps(insn)


def disassemble(insns: Iterable[Instruction]) -> str:
    return "\n".join(f"{index:6d}  {disassemble_one(insn)}" for index, insn in enumerate(insns))


def disassemble_file(path: str | Path, config: VTAConfig) -> str:
    """The listing of a binary instruction stream file; unreadable or malformed input is a UserError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read VTA instruction stream {path}: {exc.strerror}") from None
    try:
        return disassemble(instructions_from_bytes(data, config))
    except ValueError as exc:
        raise UserError(f"{path} is not a VTA instruction stream: {exc}") from None
