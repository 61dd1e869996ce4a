"""VTA configuration and ISA: golden bit patterns hand-derived from docs/vta.md section 4, range checks."""

import json

import pytest

from edgetune.targets.vta.config import VTAConfig, VTAConfigError, get_config
from edgetune.targets.vta.isa import (AluInsn, AluOp, FinishInsn, GemmInsn, MemInsn, MemType, Opcode, Uop, decode,
                                      decode_uop, disassemble, encode, encode_uop, instructions_from_bytes,
                                      instructions_to_bytes)

CFG = get_config("vta-sim")


def test_default_config_derives_the_documented_depths():
    assert [CFG.depth(b) for b in ("uop", "inp", "wgt", "acc", "out")] == [8192, 2048, 1024, 2048, 2048]
    assert [CFG.elem_bytes(b) for b in ("uop", "inp", "wgt", "acc", "out")] == [4, 16, 256, 64, 16]
    assert CFG.log_out_buff_size == 15 and CFG.uop_src_bits == 11
    assert CFG.bitstream_name == "1x16_i8w8a32_15_15_18_17"
    assert CFG.peak_gops == pytest.approx(51.2) and CFG.bus_bytes == 8
    ultra = get_config("vta-ultra96")
    assert ultra.clock_mhz == 333 and ultra.bus_bytes == 16 and ultra.peak_gops == pytest.approx(170.5, abs=0.1)


def test_config_reads_upstream_json(tmp_path):
    path = tmp_path / "vta_config.json"
    path.write_text(json.dumps({"TARGET": "sim", "HW_VER": "0.0.2", "LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3,
                                "LOG_ACC_WIDTH": 5, "LOG_BATCH": 0, "LOG_BLOCK": 3, "LOG_UOP_BUFF_SIZE": 15,
                                "LOG_INP_BUFF_SIZE": 14, "LOG_WGT_BUFF_SIZE": 16, "LOG_ACC_BUFF_SIZE": 16}))
    small = VTAConfig.from_json(path)
    assert small.block == 8 and small.elem_bytes("wgt") == 64 and small.depth("wgt") == 1024
    assert small.depth("inp") == 2048 and small.depth("acc") == 2048
    assert VTAConfig.from_json(small.to_json()) == small


@pytest.mark.parametrize("bad, words", [({"LOG_ACC_WIDTH": 4}, "int8 x int8 -> int32"),
                                        ({"LOG_FOO": 1}, "unknown VTA config key"),
                                        ({"LOG_INP_BUFF_SIZE": 4}, "at least 2"),
                                        ({"LOG_ACC_BUFF_SIZE": 22}, "too deep"),
                                        ({"alu_ii": 0}, "alu_ii")])
def test_bad_config_is_a_clear_error(bad, words):
    with pytest.raises(VTAConfigError, match=words):
        VTAConfig.from_json(bad)


def _bytes(word0: int, word1: int) -> bytes:
    return word0.to_bytes(8, "little") + word1.to_bytes(8, "little")


GOLDEN = [
    # LOAD INP, pop_next+push_next, sram 5, dram 0x12345, 3x14 stride 14, pads y0=1 x0=1 x1=1
    (MemInsn(opcode=Opcode.LOAD, memory_type=MemType.INP, sram_base=5, dram_base=0x12345, y_size=3, x_size=14,
             x_stride=14, y_pad_0=1, x_pad_0=1, x_pad_1=1, pop_next=True, push_next=True),
     _bytes(0x0000048D14001550, 0x1101000E000E0003)),
    # GEMM pop_prev, uop [0, 8192), 16x1 loops, dst 98/0, src 0/144, wgt 9/1023
    (GemmInsn(uop_bgn=0, uop_end=8192, iter_out=16, iter_in=1, dst_factor_out=98, src_factor_in=144,
              wgt_factor_out=9, wgt_factor_in=1023, pop_prev=True),
     _bytes(0x000200840000000A, 0xFFC0912000000062)),
    # ALU SHR imm -1 push_prev, uop [10, 20), 2x3 loops, dst 1/0, src 0/5
    (AluInsn(uop_bgn=10, uop_end=20, iter_out=2, iter_in=3, dst_factor_out=1, src_factor_in=5,
             alu_opcode=AluOp.SHR, use_imm=True, imm=-1, push_prev=True),
     _bytes(0x0006001002800A24, 0xFFFFB00A00000001)),
    (FinishInsn(push_next=True), _bytes(0x43, 0)),
]


@pytest.mark.parametrize("insn, golden", GOLDEN, ids=["load", "gemm", "alu", "finish"])
def test_golden_bit_patterns_and_round_trip(insn, golden):
    assert instructions_to_bytes([insn], CFG) == golden
    assert instructions_from_bytes(golden, CFG) == [insn]


def test_alu_immediate_is_sign_extended():
    insn = decode(encode(AluInsn(uop_bgn=0, uop_end=1, iter_out=1, iter_in=1, alu_opcode=AluOp.ADD,
                                 use_imm=True, imm=-32768), CFG), CFG)
    assert insn.imm == -32768
    with pytest.raises(ValueError, match="imm=32768"):
        encode(AluInsn(uop_bgn=0, uop_end=1, iter_out=1, iter_in=1, alu_opcode=AluOp.ADD, imm=32768), CFG)


def test_uop_golden_and_ranges():
    assert encode_uop(Uop(dst=5, src=1000, wgt=1023), CFG) == 0xFFDF4005
    assert decode_uop(0xFFDF4005, CFG) == Uop(5, 1000, 1023)
    with pytest.raises(ValueError, match="wgt=1024"):
        encode_uop(Uop(0, 0, 1024), CFG)


@pytest.mark.parametrize("field, value", [("uop_end", 16384), ("iter_out", 16384), ("dst_factor_in", 2048),
                                          ("wgt_factor_out", 1024), ("uop_bgn", -1)])
def test_out_of_range_field_names_the_field(field, value):
    args = dict(uop_bgn=0, uop_end=1, iter_out=1, iter_in=1)
    args[field] = value
    with pytest.raises(ValueError, match=f"GEMM field {field}={value}"):
        encode(GemmInsn(**args), CFG)


def test_decode_rejects_unknown_opcode_and_stream_length():
    with pytest.raises(ValueError, match="instruction 1: unknown VTA opcode 7"):
        instructions_from_bytes(_bytes(0x43, 0) + _bytes(7, 0), CFG)
    with pytest.raises(ValueError, match="multiple of 16"):
        instructions_from_bytes(b"\0" * 17, CFG)


def test_disassembler_shows_fields():
    text = disassemble([insn for insn, _ in GOLDEN])
    assert "LOAD   INP  sram=5 dram=74565 y=3 x=14 stride=14 pad(y0,y1,x0,x1)=(1,0,1,1)" in text
    assert "GEMM   uop[0:8192] loop 16x1 dst(98,0) src(0,144) wgt(9,1023)  deps[pop_prev]" in text
    assert "ALU    SHR uop[10:20] loop 2x3 dst(1,0) src(0,5) imm=-1  deps[push_prev]" in text
    assert text.splitlines()[-1].strip().endswith("FINISH  deps[push_next]")
