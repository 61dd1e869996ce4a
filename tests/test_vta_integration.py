"""`-t vta-sim`: the quantized digits CNN with its convolutions on the simulated VTA accelerator.

The accelerator's layers must give exactly the outputs of the same integer graph run on the host CPU
(edgetune checks this at every compile; here it is checked again from the saved artifact)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgetune

ROOT = Path(__file__).resolve().parent.parent
EDGETUNE = str(Path(sys.executable).parent / "edgetune")


@pytest.fixture(scope="module")
def vta_digits(digits_model, tmp_path_factory):
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    from train import load_data

    x_train, x_test, _, y_test = load_data()
    folder = tmp_path_factory.mktemp("vta")
    np.savez(folder / "calibration.npz", image=x_train[:120])
    out = folder / "digits_vta"
    result = subprocess.run([EDGETUNE, "compile", str(digits_model), "-t", "vta-sim", "-o", str(out), "--quantize",
                             "int8", "--calibration", str(folder / "calibration.npz"), "--repeat", "3"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result.stdout, x_test, y_test


def test_digits_on_vta_matches_the_integer_graph_on_the_cpu_exactly(vta_digits):
    out, stdout, x_test, y_test = vta_digits
    manifest = json.loads((out / "manifest.json").read_text())
    check = manifest["quantization"]["accelerator_check"]
    assert check["exact"] and check["max_abs_diff"] == 0.0
    layers = json.loads((out / "vta.json").read_text())["layers"]
    assert [l["unit"] for l in layers] == ["conv2d_0", "conv2d_1"]  # the 1-channel stem and the 10-way dense stay
    assert all(f"vta-{i}.insn" in manifest["files"] for i in range(len(layers)))  # checksummed like model.so
    assert manifest["validation"]["passed"]
    compiled = edgetune.load(out)  # reloaded: programs rebuilt from constants, checked against the streams
    predictions = np.array([compiled.run([x[None]])[0].argmax() for x in x_test[:150]])
    assert np.mean(predictions == y_test[:150]) >= 0.97


def test_latency_log_has_per_layer_cycles_dram_bytes_and_utilisation(vta_digits):
    out, stdout, _, _ = vta_digits
    latency = json.loads((out / "latency.json").read_text())
    assert latency["emulated"] is True
    for layer in latency["accelerator"]:
        assert layer["cycles"] > 0 and 0 < layer["gemm_utilisation"] <= 1 and layer["gemm_ops"] > 0
        assert layer["dram_bytes"]["inp_load_nbytes"] > 0 and layer["dram_bytes"]["out_store_nbytes"] > 0
    assert "accelerator layers (timing model" in stdout


def test_instruction_streams_disassemble_and_tampering_is_refused(vta_digits, tmp_path):
    out, _, _, _ = vta_digits
    listing = subprocess.run([EDGETUNE, "vta", "disasm", str(out / "vta-0.insn")], capture_output=True, text=True)
    assert listing.returncode == 0 and "GEMM" in listing.stdout and "FINISH" in listing.stdout
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    with np.load(copy / "vta-0.npz") as constants:
        weight, bias = constants["weight"].copy(), constants["bias"]
    weight.flat[0] ^= 1
    np.savez(copy / "vta-0.npz", weight=weight, bias=bias)
    result = subprocess.run([EDGETUNE, "profile", str(copy)], capture_output=True, text=True)
    assert result.returncode == 2 and "vta-0.npz" in result.stderr and "Traceback" not in result.stderr


def test_float_build_for_vta_is_refused_with_the_fix(digits_model, tmp_path):
    result = subprocess.run([EDGETUNE, "compile", str(digits_model), "-t", "vta-sim", "-o", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--quantize int8 --calibration" in result.stderr
    assert not (tmp_path / "o").exists()
