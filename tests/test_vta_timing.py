"""VTA timing model: hand-computed cycles for small streams, token waits, and queue backpressure."""

import pytest

from edgetune.targets.vta.config import get_config
from edgetune.targets.vta.isa import FinishInsn, GemmInsn, MemInsn, MemType, Opcode
from edgetune.targets.vta.simulator import VTADeadlockError
from edgetune.targets.vta.timing import estimate, instruction_cycles

CFG = get_config("vta-sim")  # 64-bit bus: 8 B/cycle, 2 fetch cycles per instruction, 48-cycle DMA requests


def load_inp(x, **kw):
    return MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, sram_base=0, dram_base=0, y_size=1, x_size=x,
                   x_stride=x, **kw)


def gemm(n, **kw):
    return GemmInsn(uop_bgn=0, uop_end=n, iter_out=1, iter_in=1, **kw)


def test_instruction_costs():
    assert instruction_cycles(load_inp(2), CFG) == 48 + 4
    padded = MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, sram_base=0, dram_base=0, y_size=2, x_size=3,
                     x_stride=3, y_pad_0=1, x_pad_1=1)
    assert instruction_cycles(padded, CFG) == 2 * (48 + 6) + (3 * 4 - 6)
    assert instruction_cycles(GemmInsn(uop_bgn=4, uop_end=10, iter_out=3, iter_in=2), CFG) == 8 + 36
    assert instruction_cycles(load_inp(0), CFG) == 1
    assert instruction_cycles(load_inp(2), get_config("vta-ultra96")) == 48 + 2


def test_token_wait_is_charged_to_the_consumer():
    report = estimate([load_inp(2, push_next=True), gemm(2, pop_prev=True), FinishInsn()], CFG)
    # fetch dispatches at 2, 4, 6; load 2..54; GEMM waits for the token until 54, runs 10; FINISH 64..65
    assert report.cycles == 65
    assert report.modules["load"].busy == 52 and report.modules["load"].fetch_stall == 2
    assert report.modules["compute"].token_stall == 50 and report.modules["compute"].busy == 11
    assert report.gemm_uops == 2 and report.gemm_utilisation == pytest.approx(2 / 65)
    assert report.latency_ms == pytest.approx(65 / 100e3) and report.gops == pytest.approx(2 * 512 / 65 * 0.1)


def test_full_token_queue_and_command_queue_apply_backpressure():
    program = [load_inp(2, push_next=True), load_inp(2, push_next=True), gemm(100, pop_prev=True),
               gemm(100, pop_prev=True), FinishInsn()]
    free = estimate(program, CFG)
    tight = estimate(program, CFG.replace(dep_queue_depth=1))
    # second load ends at 2+52+52 = 106 but may only push once the first token was popped (GEMM start at 54)
    assert free.modules["load"].push_stall == 0 and tight.modules["load"].push_stall == 0
    slow = [gemm(100)] + program
    blocked = estimate(slow, CFG.replace(dep_queue_depth=1))
    # now the first pop happens at 110 (after a 108-cycle GEMM): the second load, done at 108, waits 2 cycles
    assert blocked.modules["load"].push_stall == 2 and estimate(slow, CFG).modules["load"].push_stall == 0
    fetch_bound = estimate([gemm(100), gemm(100), gemm(100), load_inp(2), FinishInsn()],
                           CFG.replace(cmd_queue_depth=1))
    # fetch waited until the full compute queue took the third GEMM (at 110) before it could dispatch the load
    assert fetch_bound.modules["load"].fetch_stall >= 100


def test_inconsistent_tokens_deadlock():
    with pytest.raises(VTADeadlockError, match="pending: compute"):
        estimate([gemm(2, pop_prev=True), FinishInsn()], CFG)
