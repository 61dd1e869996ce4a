"""`-t vta-sim`: the quantized digits CNN with its convolutions on the simulated VTA accelerator.

The accelerator's layers must give exactly the outputs of the same integer graph run on the host CPU
(edgetune checks this at every compile; here it is checked again from the saved artifact)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgetune

ROOT = Path(__file__).resolve().parent.parent
EDGETUNE = str(Path(sys.executable).parent / "edgetune")


def _digits_data():
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    from train import load_data

    return load_data()


def _calibration(folder: Path) -> list[str]:
    np.savez(folder / "calibration.npz", image=_digits_data()[0][:120])
    return ["--quantize", "int8", "--calibration", str(folder / "calibration.npz")]


@pytest.fixture(scope="module")
def vta_digits(digits_model, tmp_path_factory):
    _, x_test, _, y_test = _digits_data()
    folder = tmp_path_factory.mktemp("vta")
    out = folder / "digits_vta"
    result = subprocess.run([EDGETUNE, "compile", str(digits_model), "-t", "vta-sim", "-o", str(out),
                             *_calibration(folder), "--repeat", "3"], capture_output=True, text=True, timeout=600)
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


@pytest.mark.parametrize("command", [["compile", "-o", "o"], ["tune", "--trials", "4", "--db", "db"]])
def test_float_build_or_tuning_for_vta_is_refused_with_the_fix(digits_model, tmp_path, command):
    result = subprocess.run([EDGETUNE, command[0], str(digits_model), "-t", "vta-sim", *command[1:]],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "--quantize int8 --calibration" in result.stderr
    assert not (tmp_path / "o").exists()


def test_tuned_tilings_are_recorded_reused_and_stay_exact(digits_model, tmp_path):
    """`edgetune tune -t vta-sim` searches each offloaded layer's tiling into the database; a compile asking for
    the same budget then searches nothing, builds with the recorded tilings and is still bit-exact."""
    flags, db = _calibration(tmp_path), tmp_path / "db"
    tuned = subprocess.run([EDGETUNE, "tune", str(digits_model), "-t", "vta-sim", "--trials", "6", "--db", str(db),
                            *flags], capture_output=True, text=True, timeout=600)
    assert tuned.returncode == 0, tuned.stderr
    assert "tuning VTA tiling [" in tuned.stderr and "6/6 candidates" in tuned.stderr
    records = [json.loads(line) for line in next(db.glob("vta-*/vta_tilings.json")).read_text().splitlines()]
    assert records and all(r["evaluated"] == 6 and r["cycles"] <= r["default_cycles"] for r in records)
    assert int(re.search(r"(\d+) candidates measured now", tuned.stdout).group(1)) == 6 * len(records)
    out = tmp_path / "out"
    compiled = subprocess.run([EDGETUNE, "compile", str(digits_model), "-t", "vta-sim", "-o", str(out), "--tune", "6",
                               "--db", str(db), *flags, "--repeat", "3"], capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, compiled.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    tuning = manifest["tuning"]
    assert tuning["measured_now"] == 0 and "tuning VTA tiling" not in compiled.stderr
    assert {t["best_cycles"] for t in tuning["tasks"]} == {r["cycles"] for r in records}
    layers = json.loads((out / "vta.json").read_text())["layers"]
    assert {json.dumps(l["tiling"]) for l in layers} == {json.dumps(r["tiling"]) for r in records}
    assert manifest["quantization"]["accelerator_check"]["exact"]
