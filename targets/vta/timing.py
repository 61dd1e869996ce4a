"""Cycle estimate of an instruction stream: the four modules as sequential servers joined by bounded queues.

Separate from the functional simulator and driven by the same decoded stream. Fetch dispatches one instruction
per `fetch_cycles` and stalls when the target command queue is full; a module starts its next instruction once
it is free, the instruction has been dispatched and every token it pops has been pushed; it pushes its tokens
when the instruction ends, later if the token queue is full. Costs per instruction are in `instruction_cycles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .config import VTAConfig
from .isa import AluInsn, FinishInsn, GemmInsn, Instruction
from .pipeline import QUEUES, Module, pops, pushes, route
from .simulator import VTADeadlockError


def instruction_cycles(insn: Instruction, config: VTAConfig) -> int:
    """Cycles a module is busy with `insn`.

    GEMM: one micro-op per cycle plus pipeline fill. ALU: `alu_ii` cycles per micro-op (HLS II = 2) plus fill.
    LOAD/STORE: per row an AXI request latency plus the bytes over the bus, plus one cycle per padding element
    written. No-ops and FINISH: a cycle or so.
    """
    if isinstance(insn, GemmInsn):
        return config.gemm_pipeline_cycles + insn.iter_out * insn.iter_in * (insn.uop_end - insn.uop_bgn)
    if isinstance(insn, AluInsn):
        return config.alu_pipeline_cycles + config.alu_ii * insn.iter_out * insn.iter_in * (insn.uop_end - insn.uop_bgn)
    if isinstance(insn, FinishInsn) or insn.x_size == 0:
        return config.finish_cycles
    elem = config.elem_bytes(insn.memory_type.name.lower())
    row_cycles = -(-insn.x_size * elem // config.bus_bytes)
    footprint = (insn.y_pad_0 + insn.y_size + insn.y_pad_1) * (insn.x_pad_0 + insn.x_size + insn.x_pad_1)
    return insn.y_size * (config.dma_request_cycles + row_cycles) + footprint - insn.y_size * insn.x_size


@dataclass
class ModuleTime:
    busy: int = 0  # executing instructions
    token_stall: int = 0  # waiting for a token from another module
    fetch_stall: int = 0  # waiting for fetch to dispatch the next instruction
    push_stall: int = 0  # waiting for room in a full token queue


@dataclass
class TimingReport:
    cycles: int
    clock_mhz: float
    gemm_ops: int  # multiply-accumulate micro-ops x 2 x MACs per micro-op
    peak_ops_per_cycle: int
    gemm_uops: int
    modules: dict[str, ModuleTime] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return self.cycles / (self.clock_mhz * 1e3)

    @property
    def gops(self) -> float:
        return self.gemm_ops / (self.latency_ms * 1e6) if self.cycles else 0.0

    @property
    def gemm_utilisation(self) -> float:
        """Fraction of cycles in which the GEMM core retires a micro-op."""
        return self.gemm_uops / self.cycles if self.cycles else 0.0

    def as_dict(self) -> dict:
        return {"cycles": self.cycles, "clock_mhz": self.clock_mhz, "latency_ms": self.latency_ms,
                "gops": self.gops, "gemm_utilisation": self.gemm_utilisation,
                "modules": {name: vars(t) for name, t in self.modules.items()}}


def estimate(insns: Sequence[Instruction], config: VTAConfig) -> TimingReport:
    """Event-ordered evaluation of the stream's timing; an inconsistent token pattern raises VTADeadlockError."""
    modules = [route(insn) for insn in insns]
    position, per_queue = [], {m: 0 for m in Module}
    for module in modules:  # index of each instruction within its module's command queue
        position.append(per_queue[module])
        per_queue[module] += 1
    by_queue: dict[Module, list[int]] = {m: [] for m in Module}
    for index, module in enumerate(modules):
        by_queue[module].append(index)

    dispatch: list[int | None] = [None] * len(insns)
    start: list[int | None] = [None] * len(insns)
    push_times = {q: [] for q in QUEUES}
    pop_times = {q: [] for q in QUEUES}
    free = dict.fromkeys(Module, 0)
    heads = dict.fromkeys(Module, 0)
    times = {m: ModuleTime() for m in Module}
    fetched, fetch_clock, finish_end = 0, 0, None
    while finish_end is None:
        progressed = False
        while fetched < len(insns):  # fetch: in order, blocked by a full command queue
            module = modules[fetched]
            ahead = position[fetched] - config.cmd_queue_depth
            if ahead >= 0:
                leaving = start[by_queue[module][ahead]]
                if leaving is None:
                    break
                fetch_clock = max(fetch_clock, leaving)
            fetch_clock += config.fetch_cycles
            dispatch[fetched] = fetch_clock
            fetched += 1
            progressed = True
        for module in Module:
            while heads[module] < len(by_queue[module]) and finish_end is None:
                index = by_queue[module][heads[module]]
                insn = insns[index]
                if dispatch[index] is None:
                    break
                needed = pops(insn, module)
                if any(len(pop_times[q]) >= len(push_times[q]) for q in needed):
                    break
                outgoing = pushes(insn, module)
                if any(len(push_times[q]) >= config.dep_queue_depth
                       and len(pop_times[q]) <= len(push_times[q]) - config.dep_queue_depth for q in outgoing):
                    break  # the token queue is full and the pop that frees it is not decided yet
                ready = max(free[module], dispatch[index])
                token_ready = max([push_times[q][len(pop_times[q])] for q in needed], default=0)
                begin = max(ready, token_ready)
                for q in needed:
                    pop_times[q].append(begin)
                end = begin + instruction_cycles(insn, config)
                done = end
                for q in outgoing:
                    slot = len(push_times[q]) - config.dep_queue_depth
                    done = max(done, pop_times[q][slot] if slot >= 0 else end)
                for q in outgoing:
                    push_times[q].append(done)
                t = times[module]
                t.fetch_stall += max(0, dispatch[index] - free[module])
                t.token_stall += begin - ready
                t.busy += end - begin
                t.push_stall += done - end
                start[index], free[module] = begin, done
                heads[module] += 1
                progressed = True
                if isinstance(insn, FinishInsn):
                    finish_end = done
        if not progressed and finish_end is None:
            stuck = [m.value for m in Module if heads[m] < len(by_queue[m])]
            raise VTADeadlockError(f"VTA timing: no module can proceed (pending: {', '.join(stuck)})")
    gemm_uops = sum(i.iter_out * i.iter_in * (i.uop_end - i.uop_bgn) for i in insns
                    if isinstance(i, GemmInsn) and not i.reset)
    cycles = max([finish_end] + [free[m] for m in Module])
    return TimingReport(cycles=cycles, clock_mhz=config.clock_mhz, gemm_ops=2 * config.macs_per_cycle * gemm_uops,
                        peak_ops_per_cycle=2 * config.macs_per_cycle, gemm_uops=gemm_uops,
                        modules={m.value: times[m] for m in Module})
