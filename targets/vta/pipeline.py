"""The decoupled access/execute pipeline: which module runs an instruction and which token queues it uses.

Shared by the functional simulator and the timing model, so that both route and synchronise a stream the same
way the fetch module and the four dependency FIFOs of the hardware do.
"""

from __future__ import annotations

import enum
from typing import Sequence

from .isa import FinishInsn, Instruction, MemInsn, MemType, Opcode


class Module(enum.Enum):
    LOAD = "load"
    COMPUTE = "compute"
    STORE = "store"


# Token queues: l2g load->compute (RAW), g2l compute->load (WAR), g2s compute->store (RAW), s2g store->compute (WAR).
QUEUES = ("l2g", "g2l", "g2s", "s2g")
POPS = {Module.LOAD: {"pop_next": "g2l"}, Module.COMPUTE: {"pop_prev": "l2g", "pop_next": "s2g"},
        Module.STORE: {"pop_prev": "g2s"}}
PUSHES = {Module.LOAD: {"push_next": "l2g"}, Module.COMPUTE: {"push_prev": "g2l", "push_next": "g2s"},
          Module.STORE: {"push_prev": "s2g"}}


def route(insn: Instruction) -> Module:
    """Fetch's routing: STORE to store, LOAD INP/WGT to load, everything else (UOP/ACC loads too) to compute."""
    if insn.opcode == Opcode.STORE:
        return Module.STORE
    if insn.opcode == Opcode.LOAD and insn.memory_type in (MemType.INP, MemType.WGT):
        return Module.LOAD
    return Module.COMPUTE


def pops(insn: Instruction, module: Module) -> list[str]:
    return [queue for flag, queue in POPS[module].items() if getattr(insn, flag)]


def pushes(insn: Instruction, module: Module) -> list[str]:
    return [queue for flag, queue in PUSHES[module].items() if getattr(insn, flag)]


def split_queues(insns: Sequence[Instruction]) -> dict[Module, list[int]]:
    """Instruction indices per module, in fetch order; flags a module does not have raise ValueError."""
    queues: dict[Module, list[int]] = {module: [] for module in Module}
    for index, insn in enumerate(insns):
        module = route(insn)
        for flag in ("pop_prev", "pop_next", "push_prev", "push_next"):
            wired = POPS[module] if flag.startswith("pop") else PUSHES[module]
            if getattr(insn, flag) and flag not in wired:
                raise ValueError(f"instruction {index} ({describe(insn)}) sets {flag}, which the {module.value} "
                                 "module does not have")
        if isinstance(insn, FinishInsn) and (insn.pop_prev or insn.pop_next):
            raise ValueError(f"instruction {index}: FINISH must not pop tokens (pop on a no-op before it)")
        queues[module].append(index)
    return queues


def describe(insn: Instruction) -> str:
    if isinstance(insn, MemInsn):
        return f"{insn.opcode.name} {insn.memory_type.name}"
    return insn.opcode.name
