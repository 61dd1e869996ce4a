"""`edgetune vta disasm`: lists a stream written by the VTA compiler; bad input is one line and exit status 2."""

import numpy as np
import pytest

from edgetune.cli import main
from edgetune.targets.vta.compiler import compile_conv2d
from edgetune.targets.vta.config import get_config
from edgetune.targets.vta.workload import Requantize


def test_disasm_lists_a_compiled_stream(tmp_path, capsys):
    program = compile_conv2d((1, 32, 8, 8), np.ones((32, 32, 3, 3), np.int8), np.zeros(32, np.int32),
                             Requantize(4), get_config("vta-sim"), padding=(1, 1))
    path = tmp_path / "conv.insn"
    program.write_instructions(path)
    assert main(["vta", "disasm", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(program.instructions)
    assert "LOAD   UOP" in lines[0] and lines[-1].strip().endswith("FINISH")
    assert any("GEMM" in line and "deps[pop_prev" in line for line in lines)
    assert any("ALU    SHR" in line and "imm=4" in line for line in lines)
    assert main(["vta", "disasm", str(path), "--config", "vta-ultra96"]) == 0  # same widths, same listing
    assert capsys.readouterr().out.splitlines() == lines


@pytest.mark.parametrize("content, args, fragment", [
    (None, [], "cannot read VTA instruction stream"),
    (b"\0" * 17, [], "not a multiple of 16"),
    ((7).to_bytes(16, "little"), [], "instruction 0: unknown VTA opcode 7"),
    ((3).to_bytes(16, "little"), ["--config", "vta-nope"], "unknown VTA preset 'vta-nope'"),
])
def test_disasm_bad_input_is_one_line_exit_2(tmp_path, capsys, content, args, fragment):
    path = tmp_path / "stream.bin"
    if content is not None:
        path.write_bytes(content)
    assert main(["vta", "disasm", str(path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgetune: error:") and fragment in err[0], err
