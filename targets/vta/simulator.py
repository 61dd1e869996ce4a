"""Bit-exact functional simulator of VTA (the role of upstream fsim), in numpy.

DRAM is a byte array; the SRAMs are typed numpy arrays. The load, compute and store modules each execute their
own queue in order and meet only through the four token counters. Scheduling is greedy in pipeline order (load
runs as far ahead as its tokens allow, then compute, then store), which is the interleaving most likely to expose
a missing WAR token; a state where no module can move before FINISH is reported as a deadlock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import VTAConfig
from .isa import AluInsn, AluOp, FinishInsn, GemmInsn, Instruction, MemInsn, MemType, Opcode
from .pipeline import QUEUES, Module, describe, pops, pushes, split_queues

INT32_MIN, INT32_SPAN = -(1 << 31), 1 << 32


class VTADeadlockError(RuntimeError):
    """No module can make progress before FINISH: the stream's dependency tokens are inconsistent."""


def wrap_int32(values: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of integer values to int32, as the 32-bit accumulators do."""
    return ((np.asarray(values, dtype=np.int64) - INT32_MIN) % INT32_SPAN + INT32_MIN).astype(np.int32)


@dataclass
class Counters:
    """The fsim profiler counters (docs/vta.md section 4.10)."""

    inp_load_nbytes: int = 0
    wgt_load_nbytes: int = 0
    acc_load_nbytes: int = 0
    uop_load_nbytes: int = 0
    out_store_nbytes: int = 0
    gemm_counter: int = 0
    alu_counter: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class DRAM:
    """Host-visible memory: a byte array with a bump allocator aligned to pages (as the runtime does).

    Allocation only reserves addresses, so a compiler can plan a layout without touching memory; the bytes are
    materialised on first write.
    """

    PAGE = 4096

    def __init__(self):
        self.used = 0
        self._data = np.zeros(0, dtype=np.uint8)

    def alloc(self, nbytes: int) -> int:
        """Byte address of a fresh, zeroed, page-aligned region."""
        address = -(-self.used // self.PAGE) * self.PAGE
        self.used = address + nbytes
        return address

    @property
    def data(self) -> np.ndarray:
        if self._data.size < self.used:
            grown = np.zeros(-(-self.used // self.PAGE) * self.PAGE, dtype=np.uint8)
            grown[:self._data.size] = self._data
            self._data = grown
        return self._data

    def write(self, address: int, array: np.ndarray) -> None:
        raw = np.ascontiguousarray(array).view(np.uint8).ravel()
        self.data[address:address + raw.size] = raw

    def read(self, address: int, nbytes: int) -> np.ndarray:
        return self.data[address:address + nbytes].copy()

    def place(self, array: np.ndarray) -> int:
        """Allocate and fill a region; returns its byte address."""
        address = self.alloc(np.asarray(array).nbytes)
        self.write(address, array)
        return address


class Simulator:
    """The four modules' state (SRAMs, token queues, counters) and their instruction semantics."""

    def __init__(self, config: VTAConfig, dram: DRAM, allow_mul: bool = False):
        self.config, self.dram, self.allow_mul = config, dram, allow_mul
        c = config
        self.inp = np.zeros((c.depth("inp"), c.batch, c.block_in), dtype=np.int8)
        self.wgt = np.zeros((c.depth("wgt"), c.block_out, c.block_in), dtype=np.int8)
        self.acc = np.zeros((c.depth("acc"), c.batch, c.block_out), dtype=np.int32)
        self.uop = np.zeros(c.depth("uop"), dtype=np.uint32)
        self.counters = Counters()
        self.tokens = dict.fromkeys(QUEUES, 0)
        self._sram = {MemType.INP: self.inp, MemType.WGT: self.wgt, MemType.ACC: self.acc, MemType.UOP: self.uop}

    # --- scheduling ---------------------------------------------------------------------------------------
    def run(self, insns: Sequence[Instruction]) -> Counters:
        """Execute a stream up to its FINISH; tokens must balance and nothing may be left behind."""
        queues = split_queues(insns)
        heads = dict.fromkeys(Module, 0)
        finished = False
        while not finished:
            progressed = False
            for module in Module:
                while heads[module] < len(queues[module]) and not finished:
                    insn = insns[queues[module][heads[module]]]
                    needed = pops(insn, module)
                    if any(self.tokens[q] == 0 for q in needed):
                        break
                    for q in needed:
                        self.tokens[q] -= 1
                    self.execute(insn)
                    for q in pushes(insn, module):
                        self.tokens[q] += 1
                    heads[module] += 1
                    progressed = True
                    finished = isinstance(insn, FinishInsn)
            if not progressed and not finished:
                raise VTADeadlockError(self._deadlock_message(insns, queues, heads))
        left = {m.value: len(queues[m]) - heads[m] for m in Module if heads[m] < len(queues[m])}
        if left:
            raise ValueError(f"instructions left behind after FINISH: {left}")
        if any(self.tokens.values()):
            raise ValueError(f"unbalanced dependency tokens at FINISH: {self.tokens}")
        return self.counters

    def _deadlock_message(self, insns, queues, heads) -> str:
        waits = []
        for module in Module:
            if heads[module] == len(queues[module]):
                waits.append(f"{module.value} has no instructions left")
                continue
            index = queues[module][heads[module]]
            empty = [q for q in pops(insns[index], module) if self.tokens[q] == 0]
            waits.append(f"{module.value} waits on {'+'.join(empty)} at instruction {index} "
                         f"({describe(insns[index])})")
        if heads[Module.COMPUTE] == len(queues[Module.COMPUTE]):
            waits.append("the stream has no FINISH")
        return "VTA deadlock: " + "; ".join(waits)

    # --- instruction semantics ----------------------------------------------------------------------------
    def execute(self, insn: Instruction) -> None:
        if isinstance(insn, MemInsn):
            self._store(insn) if insn.opcode == Opcode.STORE else self._load(insn)
        elif isinstance(insn, GemmInsn):
            self._gemm(insn)
        elif isinstance(insn, AluInsn):
            self._alu(insn)

    def _load(self, insn: MemInsn) -> None:
        if insn.x_size == 0:
            return
        if insn.memory_type not in self._sram:
            raise ValueError(f"LOAD of memory type {insn.memory_type.name} is not supported")
        if insn.memory_type == MemType.WGT and (insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1):
            raise ValueError("LOAD WGT with padding: the hardware ignores WGT pads while fsim applies them")
        sram = self._sram[insn.memory_type]
        rows = insn.y_pad_0 + insn.y_size + insn.y_pad_1
        cols = insn.x_pad_0 + insn.x_size + insn.x_pad_1
        if insn.sram_base + rows * cols > len(sram):
            raise ValueError(f"LOAD {insn.memory_type.name} footprint [{insn.sram_base}, "
                             f"{insn.sram_base + rows * cols}) exceeds the buffer depth {len(sram)}")
        block = sram[insn.sram_base:insn.sram_base + rows * cols].reshape((rows, cols) + sram.shape[1:])
        block[...] = 0
        block[insn.y_pad_0:insn.y_pad_0 + insn.y_size, insn.x_pad_0:insn.x_pad_0 + insn.x_size] = \
            self._dram_rows(insn, sram.dtype, sram.shape[1:])
        nbytes = insn.y_size * insn.x_size * self.config.elem_bytes(insn.memory_type.name.lower())
        name = f"{insn.memory_type.name.lower()}_load_nbytes"
        setattr(self.counters, name, getattr(self.counters, name) + nbytes)

    def _dram_rows(self, insn: MemInsn, dtype, elem_shape) -> np.ndarray:
        """The y_size x x_size block of DRAM elements at dram_base with row pitch x_stride."""
        elem = int(np.prod(elem_shape)) * np.dtype(dtype).itemsize
        index = insn.dram_base + np.arange(insn.y_size)[:, None] * insn.x_stride + np.arange(insn.x_size)
        start, stop = index.min() * elem, (index.max() + 1) * elem
        if stop > self.dram.used:
            raise ValueError(f"{insn.opcode.name} {insn.memory_type.name} reaches DRAM byte {stop}, beyond the "
                             f"{self.dram.used} allocated")
        window = self.dram.data[start:stop].view(dtype).reshape((-1,) + tuple(elem_shape))
        return window[index - index.min()]

    def _store(self, insn: MemInsn) -> None:
        if insn.x_size == 0:
            return
        if insn.memory_type != MemType.OUT or insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
            raise ValueError("STORE must use memory type OUT and no padding")
        count = insn.y_size * insn.x_size
        if insn.sram_base + count > len(self.acc):
            raise ValueError(f"STORE reads OUT [{insn.sram_base}, {insn.sram_base + count}) beyond the depth "
                             f"{len(self.acc)}")
        out = self.acc[insn.sram_base:insn.sram_base + count].astype(np.int8)  # truncation: the low 8 bits
        elem = self.config.elem_bytes("out")
        index = insn.dram_base + np.arange(insn.y_size)[:, None] * insn.x_stride + np.arange(insn.x_size)
        if (index.max() + 1) * elem > self.dram.used:
            raise ValueError(f"STORE reaches DRAM byte {(index.max() + 1) * elem}, beyond the allocation")
        target = self.dram.data[:self.dram.data.size // elem * elem].reshape(-1, elem)
        target[index.ravel()] = out.reshape(count, elem).view(np.uint8)
        self.counters.out_store_nbytes += count * elem

    def _loop_indices(self, insn: GemmInsn | AluInsn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Effective (dst, src, wgt) indices in execution order: outer loop, inner loop, micro-op."""
        c = self.config
        if not 0 <= insn.uop_bgn <= insn.uop_end <= len(self.uop):
            raise ValueError(f"{insn.opcode.name} micro-ops [{insn.uop_bgn}, {insn.uop_end}) outside the "
                             f"{len(self.uop)}-entry uop buffer")
        words = self.uop[insn.uop_bgn:insn.uop_end].astype(np.int64)
        dst = words & ((1 << c.uop_dst_bits) - 1)
        src = (words >> c.uop_dst_bits) & ((1 << c.uop_src_bits) - 1)
        wgt = words >> (c.uop_dst_bits + c.uop_src_bits)
        o = np.arange(insn.iter_out)[:, None, None]
        i = np.arange(insn.iter_in)[None, :, None]
        d = (dst + o * insn.dst_factor_out + i * insn.dst_factor_in).ravel()
        s = (src + o * insn.src_factor_out + i * insn.src_factor_in).ravel()
        w = (wgt + o * getattr(insn, "wgt_factor_out", 0) + i * getattr(insn, "wgt_factor_in", 0)).ravel()
        if isinstance(insn, GemmInsn) and d.size > 1 and np.any(d[1:] == d[:-1]):  # the ALU has II >= 2
            at = int(np.nonzero(d[1:] == d[:-1])[0][0])
            raise ValueError(f"{insn.opcode.name} writes ACC[{d[at]}] in two consecutive micro-op cycles "
                             "(a pipeline hazard on the hardware)")
        return d, s, w

    @staticmethod
    def _check_range(name: str, index: np.ndarray, depth: int) -> None:
        if index.size and index.max() >= depth:
            raise ValueError(f"effective {name} index {int(index.max())} is beyond the buffer depth {depth}")

    def _gemm(self, insn: GemmInsn) -> None:
        d, s, w = self._loop_indices(insn)
        self._check_range("ACC", d, len(self.acc))
        if insn.reset:
            self.acc[d] = 0
            return
        self._check_range("INP", s, len(self.inp))
        self._check_range("WGT", w, len(self.wgt))
        self.counters.gemm_counter += d.size
        if d.size == 0:
            return
        # Group the micro-ops by weight tile so that each group is one exact float32 matmul (|sum| < 2^24),
        # then scatter-add per lane with bincount (float64, exact) and wrap to int32.
        order = np.argsort(w, kind="stable")
        w_sorted = w[order]
        starts = np.flatnonzero(np.r_[True, w_sorted[1:] != w_sorted[:-1]])
        ends = np.r_[starts[1:], w_sorted.size]
        inp = self.inp.astype(np.float32)
        lanes = self.acc.shape[1] * self.acc.shape[2]
        products = np.empty((d.size, lanes), dtype=np.float32)
        for start, end in zip(starts, ends):
            rows = order[start:end]
            block = inp[s[rows]].reshape(-1, self.inp.shape[2]) @ self.wgt[w_sorted[start]].T.astype(np.float32)
            products[rows] = block.reshape(rows.size, lanes)
        flat = (d[:, None] * lanes + np.arange(lanes)).ravel()
        sums = np.bincount(flat, weights=products.ravel().astype(np.float64), minlength=self.acc.size)
        touched = np.unique(d)
        current = self.acc.reshape(len(self.acc), lanes)
        added = sums.reshape(len(self.acc), lanes)[touched].astype(np.int64)
        current[touched] = wrap_int32(current[touched].astype(np.int64) + added)

    def _alu(self, insn: AluInsn) -> None:
        d, s, _ = self._loop_indices(insn)
        self._check_range("ACC destination", d, len(self.acc))
        if not insn.use_imm:
            self._check_range("ACC source", s, len(self.acc))
        if insn.alu_opcode == AluOp.MUL and not self.allow_mul:
            raise ValueError("ALU MUL exists only in fsim (not in the HLS or Chisel hardware); "
                             "pass allow_mul=True to simulate it")
        self.counters.alu_counter += d.size
        if d.size == 0:
            return
        independent = insn.use_imm or (np.unique(d).size == d.size and not np.isin(d, s).any())
        if independent:
            b = insn.imm if insn.use_imm else self.acc[s]
            self.acc[d] = self._alu_op(insn.alu_opcode, self.acc[d], b)
        else:  # in-place reductions: each micro-op sees the previous ones' results
            for dst, src in zip(d, s):
                self.acc[dst] = self._alu_op(insn.alu_opcode, self.acc[dst], self.acc[src])

    @staticmethod
    def _alu_op(op: AluOp, a: np.ndarray, b) -> np.ndarray:
        a = np.asarray(a, dtype=np.int64)
        b = np.broadcast_to(np.asarray(b, dtype=np.int64), a.shape)
        if op == AluOp.MIN:
            return np.minimum(a, b).astype(np.int32)
        if op == AluOp.MAX:
            return np.maximum(a, b).astype(np.int32)
        if op == AluOp.ADD:
            return wrap_int32(a + b)
        if op == AluOp.MUL:
            return wrap_int32(a * b)
        if np.any(np.abs(b) > 31):
            raise ValueError(f"ALU SHR amount {int(b.flat[np.argmax(np.abs(b))])} outside [-31, 31]")
        # b >= 0: arithmetic right shift; b < 0: left shift (fsim and HLS for -16..-1; Chisel has no left shift)
        return wrap_int32(np.where(b >= 0, a >> np.maximum(b, 0), a << np.maximum(-b, 0)))
