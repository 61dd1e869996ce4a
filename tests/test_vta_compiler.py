"""VTA compiler back end: packing, tiling, generated streams run bit-exact on the simulator, tutorial counters."""

import dataclasses

import numpy as np
import pytest

from edgetune.targets.vta.codegen import generate_conv2d
from edgetune.targets.vta.compiler import compile_conv2d, compile_dense
from edgetune.targets.vta.config import VTAConfig, get_config
from edgetune.targets.vta.isa import MemInsn, MemType, instructions_from_bytes
from edgetune.targets.vta.packing import pack_activation, pack_bias, pack_weight, unpack_activation
from edgetune.targets.vta.tiler import Tiling, candidates, is_legal
from edgetune.targets.vta.timing import estimate
from edgetune.targets.vta.workload import Conv2dWorkload, Requantize, conv2d_reference

CFG = get_config("vta-sim")
TUTORIAL = Conv2dWorkload(1, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1)  # ResNet-18 C9 (convolution_opt.py)
TUTORIAL_REQUANT = Requantize(8, rounding=False, clip_min=0, clip_max=127)


def test_packing_layouts_and_round_trip():
    rng = np.random.default_rng(0)
    data = rng.integers(-128, 128, (2, 20, 3, 5), dtype=np.int8)
    packed = pack_activation(data, 16)
    assert packed.shape == (2, 2, 3, 5, 1, 16) and packed[1, 1, 2, 4, 0, 3] == data[1, 19, 2, 4]
    assert (packed[:, 1, ..., 4:] == 0).all()  # channels 20..31 are zero padding
    np.testing.assert_array_equal(unpack_activation(packed, 20), data)
    weight = rng.integers(-128, 128, (20, 33, 3, 1), dtype=np.int8)
    wp = pack_weight(weight, 16)
    assert wp.shape == (2, 3, 3, 1, 16, 16) and wp[1, 2, 2, 0, 3, 0] == weight[19, 32, 2, 0]
    assert (wp[1, :, :, :, 4:] == 0).all() and (wp[:, 2, :, :, :, 1:] == 0).all()
    assert pack_bias(np.arange(20, dtype=np.int32), 16)[1, 0, 3] == 19


def _conv_case(rng, workload, with_bias, requant, tiling=None):
    data = rng.integers(-128, 128, (workload.batch, workload.in_channels, workload.height, workload.width),
                        dtype=np.int8)
    weight = rng.integers(-128, 128, (workload.out_channels, workload.in_channels, workload.kernel_h,
                                      workload.kernel_w), dtype=np.int8)
    bias = rng.integers(-(1 << 16), 1 << 16, workload.out_channels, dtype=np.int32) if with_bias else None
    program = compile_conv2d(data.shape, weight, bias, requant, CFG, (workload.stride_h, workload.stride_w),
                             (workload.pad_h, workload.pad_w), tiling=tiling)
    result = program.run(data)
    expected = requant.reference(conv2d_reference(data, weight, workload), bias)
    np.testing.assert_array_equal(result.output, expected, err_msg=f"{workload} {program.tiling}")
    return program, result


def test_random_conv2d_shapes_and_tilings_are_bit_exact():
    """Seeded random shapes, requantizations and legal tilings (hypothesis is not installed in the venv)."""
    rng = np.random.default_rng(1234)
    for case in range(60):
        k = int(rng.choice([1, 3, 5]))
        pad = int(rng.integers(0, k))  # pads up to k-1
        stride = int(rng.choice([1, 2]))
        workload = Conv2dWorkload(int(rng.integers(1, 3)), int(rng.integers(1, 50)), int(rng.integers(k, 12)),
                                  int(rng.integers(k, 12)), int(rng.integers(1, 50)), k, k, stride, stride, pad, pad)
        requant = Requantize(int(rng.integers(0, 16)), bool(rng.integers(2)), *sorted(rng.integers(-128, 128, 2)))
        with_bias = bool(rng.integers(2))
        legal = list(candidates(workload, CFG, with_bias))
        if not legal:  # a single output entry: every GEMM cycle would write the same ACC entry
            assert workload.out_h * workload.out_w * workload.oc_blocks(16) == 1
            with pytest.raises(ValueError, match="no legal VTA tiling"):
                _conv_case(rng, workload, with_bias, requant)
            continue
        tiling = legal[rng.integers(len(legal))] if case % 4 else None  # every fourth: the default tiling
        _conv_case(rng, workload, with_bias, requant, tiling)


def test_other_configurations_compile_and_run_bit_exact():
    """Widths, depths and block size all flow from the configuration (here 8x8 blocks, smaller buffers)."""
    small = VTAConfig.from_json({"LOG_BLOCK": 3, "LOG_INP_BUFF_SIZE": 14, "LOG_WGT_BUFF_SIZE": 16,
                                 "LOG_ACC_BUFF_SIZE": 16})
    rng = np.random.default_rng(21)
    for config in (small, get_config("vta-ultra96")):
        data = rng.integers(-128, 128, (1, 20, 10, 9), dtype=np.int8)
        weight = rng.integers(-128, 128, (30, 20, 3, 3), dtype=np.int8)
        bias = rng.integers(-999, 999, 30, dtype=np.int32)
        program = compile_conv2d(data.shape, weight, bias, Requantize(7), config, (1, 2), (1, 1))
        expected = Requantize(7).reference(conv2d_reference(data, weight, program.workload), bias)
        np.testing.assert_array_equal(program.run(data).output, expected)
        assert program.constants["weight"].shape[-1] == config.block


def test_single_pixel_tiles_put_channels_in_the_micro_ops():
    rng = np.random.default_rng(7)
    workload = Conv2dWorkload(1, 32, 3, 3, 48, 3, 3, 1, 1, 0, 0)  # a 1x1 output
    program, _ = _conv_case(rng, workload, True, Requantize(4), Tiling(1, 1, 3, 1, 2, "oc"))
    assert program.tiling.h * program.tiling.w == 1


def test_bias_is_loaded_once_for_all_tiles():
    rng = np.random.default_rng(5)
    workload = Conv2dWorkload(1, 32, 8, 8, 48, 3, 3, 1, 1, 1, 1)
    _, result = _conv_case(rng, workload, True, Requantize(5), Tiling(2, 8, 1, 1, 2, "oc"))  # 12 tiles
    assert result.counters.acc_load_nbytes == 3 * 64  # 3 channel blocks of 16 int32, once


def test_random_dense_shapes_are_bit_exact():
    rng = np.random.default_rng(99)
    for _ in range(12):
        batch, k, m = int(rng.integers(1, 5)), int(rng.integers(1, 300)), int(rng.integers(17, 200))
        data = rng.integers(-128, 128, (batch, k), dtype=np.int8)
        weight = rng.integers(-128, 128, (m, k), dtype=np.int8)
        bias = rng.integers(-1000, 1000, m, dtype=np.int32)
        requant = Requantize(int(rng.integers(0, 16)))
        result = compile_dense(batch, weight, bias, requant, CFG).run(data)
        acc = data.astype(np.int64) @ weight.T.astype(np.int64)
        expected = requant.reference(acc.T[None, :, :, None], bias)[0, :, :, 0].T
        np.testing.assert_array_equal(result.output, expected)


def test_int32_wrap_around_matches_the_reference():
    data = np.full((1, 16, 4, 4), 127, np.int8)
    weight = np.full((16, 16, 1, 1), 127, np.int8)
    bias = np.full(16, (1 << 31) - 1000, np.int32)  # bias + 16*127*127 wraps negative
    program = compile_conv2d(data.shape, weight, bias, Requantize(0, clip_min=-128), CFG)
    expected = Requantize(0, clip_min=-128).reference(conv2d_reference(data, weight, program.workload), bias)
    assert (expected == -128).all()
    np.testing.assert_array_equal(program.run(data).output, expected)


def test_tutorial_conv_reproduces_the_documented_counters():
    rng = np.random.default_rng(3)
    program, result = _conv_case(rng, TUTORIAL, False, TUTORIAL_REQUANT, Tiling(7, 14, 8, 1, 2, "oc"))
    counters = result.counters
    assert counters.inp_load_nbytes == 114_688
    assert counters.wgt_load_nbytes == 1_179_648
    assert counters.gemm_counter == 451_584
    assert counters.alu_counter == 9_408
    assert counters.out_store_nbytes == 50_176
    assert counters.acc_load_nbytes == 0
    # micro-ops: per thread one 9-tap x 98-pixel GEMM kernel and one 98-pixel epilogue kernel
    assert counters.uop_load_nbytes == 2 * (9 * 98 + 98) * 4


def test_virtual_threads_hide_load_latency():
    one = generate_conv2d(TUTORIAL, Tiling(7, 14, 8, 1, 1, "oc"), CFG, TUTORIAL_REQUANT, False)
    two = generate_conv2d(TUTORIAL, Tiling(7, 14, 8, 1, 2, "oc"), CFG, TUTORIAL_REQUANT, False)
    serial, overlapped = estimate(one.insns, CFG), estimate(two.insns, CFG)
    assert serial.gemm_uops == overlapped.gemm_uops == 451_584
    assert 0.55 < serial.gemm_utilisation < 0.75 < 0.85 < overlapped.gemm_utilisation < 1.0
    assert overlapped.modules["compute"].token_stall < serial.modules["compute"].token_stall / 10


def test_missing_war_tokens_corrupt_the_result():
    """The tokens are what keeps load from overwriting a buffer still in use: strip them and data changes."""
    rng = np.random.default_rng(11)
    workload = Conv2dWorkload(1, 64, 8, 8, 32, 3, 3, 1, 1, 1, 1)
    program, _ = _conv_case(rng, workload, False, Requantize(6), Tiling(4, 8, 2, 1, 1, "oc"))
    data = rng.integers(-128, 128, (1, 64, 8, 8), dtype=np.int8)
    reference = program.requant.reference(conv2d_reference(data, unpack_weight(program.constants["weight"], 32, 64),
                                                            workload))
    np.testing.assert_array_equal(program.run(data).output, reference)
    program.stream.insns = [
        dataclasses.replace(i, pop_next=False) if isinstance(i, MemInsn) and i.memory_type in (MemType.INP, MemType.WGT)
        else dataclasses.replace(i, push_prev=False) if i.opcode.name == "GEMM" else i for i in program.instructions]
    assert not np.array_equal(program.run(data).output, reference)


def unpack_weight(packed, out_channels, in_channels):
    ob, ib, kh, kw, bo, bi = packed.shape
    return packed.transpose(0, 4, 1, 5, 2, 3).reshape(ob * bo, ib * bi, kh, kw)[:out_channels, :in_channels]


def test_illegal_requests_are_clear_errors():
    with pytest.raises(ValueError, match="no legal VTA tiling"):
        compile_dense(1, np.ones((16, 32), np.int8), None, Requantize(0), CFG)  # one ACC entry: hazard
    assert not is_legal(TUTORIAL, Tiling(14, 14, 16, 1, 2, "oc"), CFG, False)  # ACC share overflows
    with pytest.raises(ValueError, match="pad"):
        Conv2dWorkload(1, 16, 8, 8, 16, 3, 3, pad_h=3, pad_w=3)
    with pytest.raises(ValueError, match="shift 16"):
        Requantize(16)


def test_instruction_stream_serialises_and_decodes():
    program = compile_conv2d((1, 16, 6, 6), np.ones((32, 16, 3, 3), np.int8), None, Requantize(3), CFG,
                             padding=(1, 1))
    data = program.instruction_bytes()
    assert len(data) == 16 * len(program.instructions)
    assert instructions_from_bytes(data, CFG) == program.instructions
    assert program.disassemble().splitlines()[-1].strip().endswith("FINISH")
