"""VTA functional simulator: LOAD/STORE/GEMM/ALU semantics, counters and dependency-token scheduling."""

import numpy as np
import pytest

from edgetune.targets.vta.config import get_config
from edgetune.targets.vta.isa import AluInsn, AluOp, FinishInsn, GemmInsn, MemInsn, MemType, Opcode, Uop
from edgetune.targets.vta.simulator import DRAM, Simulator, VTADeadlockError

CFG = get_config("vta-sim")


def load(mem, sram, dram_elem, y, x, stride=None, **kw):
    return MemInsn(opcode=Opcode.LOAD, memory_type=mem, sram_base=sram, dram_base=dram_elem, y_size=y, x_size=x,
                   x_stride=x if stride is None else stride, **kw)


def store(sram, dram_elem, y, x, stride=None, **kw):
    return MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=sram, dram_base=dram_elem, y_size=y,
                   x_size=x, x_stride=x if stride is None else stride, **kw)


def uop_words(uops):
    c = CFG
    return np.array([u.dst | u.src << c.uop_dst_bits | u.wgt << (c.uop_dst_bits + c.uop_src_bits) for u in uops],
                    dtype=np.uint32)


def test_load_inp_zero_pads_and_counts_only_real_bytes():
    dram = DRAM()
    data = np.random.default_rng(0).integers(-128, 128, (3, 5, 1, 16), dtype=np.int8)  # 3 rows of 5 in a pitch 5
    base = dram.place(data) // 16
    sim = Simulator(CFG, dram)
    sim.inp[:] = 7  # stale content must be overwritten by the padding
    sim.execute(load(MemType.INP, 10, base + 1, y=3, x=3, stride=5, y_pad_0=1, y_pad_1=2, x_pad_0=2, x_pad_1=1))
    tile = sim.inp[10:10 + 6 * 6].reshape(6, 6, 16)
    expected = np.zeros((6, 6, 16), np.int8)
    expected[1:4, 2:5] = data[:, 1:4, 0]
    np.testing.assert_array_equal(tile, expected)
    assert sim.inp[9, 0, 0] == 7 and sim.inp[46, 0, 0] == 7
    assert sim.counters.inp_load_nbytes == 3 * 3 * 16


def test_load_rejects_overflowing_footprint_and_padded_weights():
    sim = Simulator(CFG, DRAM())
    with pytest.raises(ValueError, match="exceeds the buffer depth 2048"):
        sim.execute(load(MemType.INP, 2040, 0, y=2, x=4, y_pad_0=1))
    with pytest.raises(ValueError, match="WGT with padding"):
        sim.execute(load(MemType.WGT, 0, 0, y=1, x=1, x_pad_0=1))


def test_store_truncates_to_the_low_byte_with_row_pitch():
    dram = DRAM()
    out = dram.alloc(4 * 16) // 16
    sim = Simulator(CFG, dram)
    sim.acc[0:4] = np.array([300, -129, 127, -1 << 31], np.int32)[:, None, None]
    sim.execute(store(0, out, y=2, x=2, stride=2))
    got = dram.read(out * 16, 64).view(np.int8).reshape(4, 16)[:, 0]
    np.testing.assert_array_equal(got, [44, 127, 127, 0])
    assert sim.counters.out_store_nbytes == 64


def test_gemm_matches_numpy_with_two_loops_reset_and_int32_wrap():
    rng = np.random.default_rng(1)
    sim = Simulator(CFG, DRAM())
    sim.inp[:64] = rng.integers(-128, 128, (64, 1, 16))
    sim.wgt[:16] = rng.integers(-128, 128, (16, 16, 16))
    uops = [Uop(dst=p, src=p, wgt=0) for p in range(4)]
    sim.uop[:4] = uop_words(uops)
    sim.acc[:8] = (1 << 31) - 5  # the first accumulation wraps
    sim.acc[8:] = 3
    # outer loop: 2 output groups (dst +4, wgt +8); inner loop: 8 reduction steps (src +8, wgt +1)
    gemm = GemmInsn(uop_bgn=0, uop_end=4, iter_out=2, iter_in=8, dst_factor_out=4, src_factor_in=8,
                    wgt_factor_out=8, wgt_factor_in=1)
    sim.execute(gemm)
    expected = np.zeros((8, 16), np.int64)
    for o in range(2):
        for i in range(8):
            for p in range(4):
                expected[o * 4 + p] += sim.inp[p + 8 * i, 0].astype(np.int64) @ sim.wgt[o * 8 + i].T.astype(np.int64)
    expected = (expected + (1 << 31) - 5 + (1 << 31)) % (1 << 32) - (1 << 31)
    np.testing.assert_array_equal(sim.acc[:8, 0], expected)
    assert sim.counters.gemm_counter == 64 and (sim.acc[8:] == 3).all()
    sim.execute(GemmInsn(uop_bgn=0, uop_end=4, iter_out=2, iter_in=1, dst_factor_out=4, reset=True))
    assert (sim.acc[:8] == 0).all() and sim.counters.gemm_counter == 64  # reset GEMMs are not counted


def test_gemm_hazard_and_range_checks():
    sim = Simulator(CFG, DRAM())
    sim.uop[:2] = uop_words([Uop(0, 0, 0), Uop(0, 1, 0)])
    with pytest.raises(ValueError, match="two consecutive micro-op cycles"):
        sim.execute(GemmInsn(uop_bgn=0, uop_end=2, iter_out=1, iter_in=1))
    sim.uop[:1] = uop_words([Uop(2047, 0, 0)])
    with pytest.raises(ValueError, match="ACC index 2048"):
        sim.execute(GemmInsn(uop_bgn=0, uop_end=1, iter_out=2, iter_in=1, dst_factor_out=1))


@pytest.mark.parametrize("op, imm, expected", [
    (AluOp.MIN, 5, [5, -7, 5, -(1 << 31)]), (AluOp.MAX, -6, [100, -6, 2 ** 31 - 1, -6]),
    (AluOp.ADD, 1, [101, -6, -(1 << 31), -(1 << 31) + 1]),  # wraps
    (AluOp.SHR, 2, [25, -2, 2 ** 29 - 1, -(1 << 29)]),  # arithmetic: -7 >> 2 == -2
    (AluOp.SHR, -1, [200, -14, -2, 0]),  # negative amount shifts left, wrapping
])
def test_alu_immediate_semantics(op, imm, expected):
    sim = Simulator(CFG, DRAM())
    sim.acc[:4] = np.array([100, -7, 2 ** 31 - 1, -(1 << 31)], np.int32)[:, None, None]
    sim.uop[:1] = uop_words([Uop(0, 0)])
    sim.execute(AluInsn(uop_bgn=0, uop_end=1, iter_out=4, iter_in=1, dst_factor_out=1, alu_opcode=op,
                        use_imm=True, imm=imm))
    np.testing.assert_array_equal(sim.acc[:4, 0, 0], expected)
    assert (sim.acc[:4] == sim.acc[:4, :, :1]).all() and sim.counters.alu_counter == 4


def test_alu_tensor_tensor_and_in_place_reduction():
    sim = Simulator(CFG, DRAM())
    values = np.arange(8, dtype=np.int32) * 3 - 10
    sim.acc[:8] = values[:, None, None]
    sim.uop[:2] = uop_words([Uop(dst=8, src=0), Uop(dst=9, src=1)])
    # bias-style add: dst 8..11 += src 0..3 (src factor 2 per outer step)
    sim.acc[8:12] = 1000
    sim.execute(AluInsn(uop_bgn=0, uop_end=2, iter_out=2, iter_in=1, dst_factor_out=2, src_factor_out=2,
                        alu_opcode=AluOp.ADD))
    np.testing.assert_array_equal(sim.acc[8:12, 0, 0], 1000 + values[:4])
    # max-pool style reduction in place: ACC[0] = max over ACC[0..7], order-dependent
    sim.uop[2:3] = uop_words([Uop(dst=0, src=1)])
    sim.execute(AluInsn(uop_bgn=2, uop_end=3, iter_out=1, iter_in=7, src_factor_in=1, alu_opcode=AluOp.MAX))
    assert sim.acc[0, 0, 0] == values.max()
    with pytest.raises(ValueError, match="MUL exists only in fsim"):
        sim.execute(AluInsn(uop_bgn=2, uop_end=3, iter_out=1, iter_in=1, alu_opcode=AluOp.MUL))


def _noop(mem, **deps):
    return load(mem, 0, 0, y=0, x=0, **deps)


def test_tokens_order_the_modules_and_balance():
    dram = DRAM()
    data = np.full((2, 1, 16), 3, np.int8)
    src = dram.place(data) // 16
    out = dram.alloc(32) // 16
    sim = Simulator(CFG, dram)
    sim.uop[:2] = uop_words([Uop(0, 0), Uop(1, 1)])
    program = [
        load(MemType.INP, 0, src, y=1, x=2, push_next=True),
        AluInsn(uop_bgn=0, uop_end=2, iter_out=1, iter_in=1, alu_opcode=AluOp.ADD, use_imm=True, imm=5),
        GemmInsn(uop_bgn=0, uop_end=2, iter_out=1, iter_in=1, reset=True, pop_prev=True),
        AluInsn(uop_bgn=0, uop_end=2, iter_out=1, iter_in=1, alu_opcode=AluOp.ADD, use_imm=True, imm=9,
                push_next=True),
        store(0, out, y=1, x=2, pop_prev=True, push_prev=True),
        _noop(MemType.UOP, pop_next=True),
        FinishInsn(),
    ]
    counters = sim.run(program)
    assert (dram.read(out * 16, 32).view(np.int8) == 9).all()
    assert counters.inp_load_nbytes == 32 and counters.alu_counter == 4 and counters.out_store_nbytes == 32
    sim = Simulator(CFG, dram)
    sim.uop[:2] = uop_words([Uop(0, 0), Uop(1, 1)])
    with pytest.raises(ValueError, match=r"instructions left behind after FINISH: \{'store': 1\}"):
        sim.run(program[:5] + [FinishInsn()])  # FINISH does not wait for the store
    with pytest.raises(ValueError, match="unbalanced dependency tokens at FINISH: {'l2g': 1"):
        Simulator(CFG, dram).run(program[:1] + [FinishInsn()])


def test_deadlock_names_the_waiting_module_and_queue():
    program = [GemmInsn(uop_bgn=0, uop_end=0, iter_out=1, iter_in=1, pop_prev=True),
               load(MemType.INP, 0, 0, y=0, x=0, pop_next=True, push_next=True), FinishInsn()]
    with pytest.raises(VTADeadlockError, match=r"load waits on g2l at instruction 1 .*compute waits on l2g "
                                               r"at instruction 0 \(GEMM\); store has no instructions left"):
        Simulator(CFG, DRAM()).run(program)
    with pytest.raises(ValueError, match="sets pop_prev, which the load module does not have"):
        Simulator(CFG, DRAM()).run([load(MemType.WGT, 0, 0, y=0, x=0, pop_prev=True), FinishInsn()])
