"""ARM64: presets, cross-compilation, and aarch64 libraries run on an emulated device (qemu) over TVM RPC.

The emulated devices are edgetune's C++ RPC server under qemu-user (targets/emulator.py), bound to 127.0.0.1.
Tests that need the cross compiler or qemu skip with the fix when they are missing (setup.sh installs them
when run as root).
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import psutil
import pytest

from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import edgetune
from edgetune.autotune import TuningDatabase, target_key
from edgetune.autotune.database import workload_key
from edgetune.cli import build_parser
from edgetune.errors import UserError
from edgetune.targets import LatencyReport, get_target
from edgetune.targets.arm import PRESETS
from edgetune.targets.kernels import kernel_table
from edgetune.targets.emulator import build_program, emulated_device, missing_tools, qemu_command
from edgetune.targets.rpc import RemoteDevice, connect
from edgetune.validate import reference_outputs

from onnx_models import light
from rpc_farm import tracker

ROOT = Path(__file__).resolve().parent.parent
EDGETUNE = str(Path(sys.executable).parent / "edgetune")
SVE_TARGET = '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+sve"]}'
EM_AARCH64 = 183  # ELF e_machine

needs_tools = pytest.mark.skipif(
    bool(missing_tools()),
    reason=f"needs {' '.join(missing_tools())}: `apt-get install {' '.join(missing_tools())}` as root "
           "(setup.sh does it)")


def run(*args, env=None):
    return subprocess.run([EDGETUNE, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def one_line_error(result, status=2):
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="session")
def a72():
    """One emulated Cortex-A72 (Raspberry Pi 4) for the whole session."""
    with emulated_device("cortex-a72") as device:
        yield device


@pytest.fixture(scope="session")
def digits_arm(digits_model, tmp_path_factory):
    """The digits CNN compiled for cortex-a72 without a device: cross-compiled and exported only."""
    out = tmp_path_factory.mktemp("arm") / "digits"
    result = run("compile", digits_model, "-t", "cortex-a72", "-o", out)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_presets_and_aliases():
    features = {t.name: t.tvm_target().attrs for t in PRESETS}
    assert set(features) == {"arm64", "cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1"}
    for name, attrs in features.items():
        assert str(attrs["mtriple"]).startswith("aarch64") and "+neon" in list(attrs["mattr"])
        assert ("+dotprod" in list(attrs["mattr"])) == (name in ("cortex-a76", "neoverse-n1")), name
        assert get_target(name).channel_block() == 4  # NEON: 4 float32 lanes
    pi4 = get_target("raspberry-pi/4b-aarch64")
    assert pi4.tvm_target().attrs["mcpu"] == "cortex-a72" and not pi4.runs_locally
    raw = get_target(SVE_TARGET)
    assert "+sve" in list(raw.tvm_target().attrs["mattr"]) and get_target(raw.name).config == raw.config
    with pytest.raises(UserError, match="not a 64-bit ARM"):
        get_target("arm/rasp4b")  # a 32-bit board tag
    listing = run("targets").stdout
    assert "cortex-a76: Cortex-A76 (Raspberry Pi 5); cortex-a76: neon, dotprod" in listing
    assert "raspberry-pi/4b-aarch64" in listing


def test_device_flags_are_checked():
    assert RemoteDevice.from_flags(None, None, None) is None
    assert RemoteDevice.from_flags("127.0.0.1:9090", None, None) == RemoteDevice("127.0.0.1", 9090)
    for flags, fragment in [(("127.0.0.1", None, None), "not HOST:PORT"),
                            ((None, "127.0.0.1:9190", None), "needs --rpc-key"),
                            ((None, None, "pi4"), "needs --rpc-tracker"),
                            (("h:1", "h:2", "pi4"), "not both")]:
        with pytest.raises(UserError, match=fragment):
            RemoteDevice.from_flags(*flags)


def test_kernel_table_skips_kernels_with_symbolic_shapes():
    """Kernels are timed alone on arrays made ahead of time: a kernel whose shapes are known only while the
    model runs is listed as not timed, with the reason, and the latency log keeps that reason."""
    @I.ir_module
    class Dynamic:
        @R.function
        def main(x: R.Tensor(("n", 4), "float32"), y: R.Tensor((2, 4), "float32")):
            return R.add(x, x), R.multiply(y, y), R.multiply(y, y)

    table = {k["name"]: k for k in kernel_table(relax.transform.LegalizeOps()(Dynamic),
                                                 get_target("cortex-a72").tvm_target())}
    assert table["add"]["calls"] == 1 and "symbolic shape ['n', 4] of x" in table["add"]["skipped"]
    assert "args" not in table["add"]
    assert table["multiply"]["calls"] == 2 and table["multiply"]["args"] == [{"shape": [2, 4], "dtype": "float32"}] * 3
    report = LatencyReport("a device", 1, 0, 1, [1.0], untimed_kernels={"add": table["add"]["skipped"]})
    assert "not timed: add (symbolic shape" in report.format_table()
    assert LatencyReport.from_dict(report.to_dict()).untimed_kernels == report.untimed_kernels


@needs_tools
def test_compile_without_device_cross_compiles_and_skips_validation(digits_arm):
    out, stdout = digits_arm
    assert (out / "model.so").read_bytes()[18] == EM_AARCH64
    assert "validation and profiling skipped" in stdout and "no device was given" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["validation"]["skipped"] and "no device was given" in manifest["validation"]["reason"]
    assert manifest["latency"] is None and not (out / "latency.json").exists()
    assert manifest["target"]["tvm"]["mcpu"] == "cortex-a72"


@needs_tools
@pytest.mark.parametrize("name", ["digits", pytest.param("light_squeezenet", marks=pytest.mark.ci)])
def test_fp32_models_match_onnxruntime_on_emulated_device(name, a72, digits_model, tmp_path):
    path = digits_model if name == "digits" else light(name)
    compiled = edgetune.compile(path, "cortex-a72", device=a72)
    assert compiled.validation.passed, compiled.validation.summary()
    assert "emulated" in compiled.metadata["validated_on"]
    feed = compiled.signature.random_feed(7)
    for got, want in zip(compiled.run(feed), reference_outputs(onnx.load(str(path)), feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    report = compiled.profile(warmup=1, repeat=3)
    assert report.emulated and "qemu" in report.device and len(report.samples_ms) == 3
    assert report.kernel_timing == "isolated" and report.kernels and not report.kernels_skipped
    assert report.format_table().startswith("NOTE: measured under emulation")
    compiled.save(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "latency.json").read_text())["emulated"] is True
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["latency"]["emulated"] is True


@needs_tools
@pytest.mark.parametrize("name, cpu", [("digits", "cortex-a76"), ("light_squeezenet", "cortex-a72")])
def test_int8_models_on_emulated_device_use_sdot_where_the_core_has_it(name, cpu, a72, digits_model, tmp_path):
    """int8 builds (signed activations, ARM's sdot takes int8 x int8) validated on the emulated core: with
    +dotprod (a76) the integer convolutions are sdot instructions, without it (a72) plain NEON."""
    path = digits_model if name == "digits" else light(name)
    shape = [1, 1, 8, 8] if name == "digits" else [1, 3, 224, 224]
    samples = np.random.default_rng(0).random((6, *shape), dtype=np.float32)
    np.savez(tmp_path / "calibration.npz", samples)
    with emulated_device(cpu) if cpu != "cortex-a72" else contextlib.nullcontext(a72) as device:
        compiled = edgetune.compile(path, cpu, device=device, quantize="int8",
                                    calibration=tmp_path / "calibration.npz")
        assert compiled.validation.passed, compiled.validation.summary()
    assert compiled.metadata["quantization"]["scheme"] == "int8"
    assert compiled.metadata["schedules"]["by_rule"].get("Conv2dNCHWcInt8", 0) >= 2
    disassembly = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(compiled.library)], capture_output=True,
                                 text=True, check=True).stdout
    assert ("sdot" in disassembly) == (cpu == "cortex-a76")


def _library_kernels(library: Path) -> set[str]:
    """The kernels an aarch64 library exports (TVM names each one's symbol __tvm_ffi_<kernel>)."""
    symbols = subprocess.run(["aarch64-linux-gnu-nm", "-D", "--defined-only", str(library)], capture_output=True,
                             text=True, check=True).stdout.split()
    return {s.removeprefix("__tvm_ffi_") for s in symbols
            if s.startswith("__tvm_ffi_") and not s.startswith("__tvm_ffi__")}  # not __tvm_ffi__library_bin


@needs_tools
def test_cli_profile_over_rpc_times_each_kernel_alone_and_marks_emulated_latency(digits_arm, a72):
    """Over RPC the VM cannot be instrumented: each of the library's kernels is timed alone on the device,
    times its calls per inference, and the sum is checked against the end-to-end time."""
    out, _ = digits_arm
    result = run("profile", out, "--rpc", f"{a72.host}:{a72.port}", "--repeat", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NOTE: measured under emulation (qemu")
    assert "each timed alone on the device" in result.stdout
    log = json.loads((out / "latency.json").read_text())
    assert log["emulated"] is True and "cortex-a72 emulated" in log["device"] and len(log["samples_ms"]) == 3
    names = [k["name"] for k in log["kernels"]]
    assert len(set(names)) == len(names) and set(names) <= _library_kernels(out / "model.so")
    rules = json.loads((out / "manifest.json").read_text())["schedules"]["kernels"]
    assert sorted(n for n in names if "conv2d" in n) == sorted(k for k, r in rules.items() if r == "Conv2dNCHWc")
    assert all(k["kind"] == "kernel" and k["calls"] >= 1 and k["mean_ms"] > 0 for k in log["kernels"])
    check = log["kernel_check"]
    assert check["method"] == "isolated" and check["end_to_end_ms"] == pytest.approx(log["end_to_end"]["mean_ms"])
    assert 0.25 < check["sum_of_calls_ms"] / check["end_to_end_ms"] < 4, check  # isolated: no tight bound

    result = run("profile", out, "--rpc", "127.0.0.1:1")
    assert "cannot reach the RPC server at 127.0.0.1:1" in one_line_error(result)


@needs_tools
@pytest.mark.ci
def test_tuning_measures_candidates_on_the_emulated_device(digits_model, a72, tmp_path):
    """`edgetune tune -t cortex-a72 --rpc`: candidates cross-linked here and measured on the device; the
    records land under the ARM target's key, and a build from them still matches onnxruntime on the device."""
    db = tmp_path / "db"
    result = run("tune", digits_model, "-t", "cortex-a72", "--trials", "4", "--db", db, "--rpc",
                 f"{a72.host}:{a72.port}")
    assert result.returncode == 0, result.stderr
    assert int(re.search(r"(\d+) candidates measured now", result.stdout).group(1)) >= 4
    target = get_target("cortex-a72").tvm_target()
    assert [p.name for p in db.iterdir()] == [target_key(target)[0]]
    records = TuningDatabase(db, target).ms.get_all_tuning_records()
    measured = [r for r in records if r.run_secs and all(0 < float(s) < 1 for s in r.run_secs)]
    assert len(measured) >= 4, [r.run_secs for r in records]  # finite times, not MetaSchedule's 1e10 failures

    # Four emulated trials need not beat the default schedules; make every default slower than any record, so
    # that the build below must take the records: it is the tuned library that has to match onnxruntime.
    baselines = db / target_key(target)[0] / "baselines.json"
    defaults = json.loads(baselines.read_text())
    baselines.write_text(json.dumps({key: {**value, "seconds": 1.0} for key, value in defaults.items()}))
    compiled = edgetune.compile(digits_model, "cortex-a72", device=a72, tuning_db=db)
    tuning, validation = compiled.metadata["tuning"], compiled.validation
    validated_on = compiled.metadata["validated_on"]
    del compiled  # the emulated device serves one session at a time: a failing assert must not hold this one
    tuned_workloads = {workload_key(r.workload.mod) for r in measured}
    assert len(tuning["kernels_from_records"]) >= len(tuned_workloads) >= 1, tuning
    assert validation.passed and "emulated" in validated_on, validation.summary()


def test_tuning_for_a_target_that_cannot_run_here_needs_a_device(digits_model, tmp_path):
    result = run("tune", digits_model, "-t", "cortex-a72", "--trials", "4", "--db", tmp_path / "db")
    line = one_line_error(result)
    assert "tuning measures every candidate on the device" in line and "--rpc HOST:PORT" in line
    assert "--rpc-tracker" in line and not (tmp_path / "db").exists()


@needs_tools
def test_sve_library_on_cortex_a53_is_an_instruction_set_mismatch(digits_model, tmp_path):
    with emulated_device("cortex-a53") as a53:
        address = f"{a53.host}:{a53.port}"
        result = run("compile", digits_model, "-t", SVE_TARGET, "-o", tmp_path / "sve", "--rpc", address)
        line = one_line_error(result)
        assert "the library uses instructions the device's CPU lacks" in line
        assert "+sve" in line and "cortex-a53" in line
        assert not (tmp_path / "sve").exists()
        # The same device still serves, and runs the NEON build: it was the instructions, not the device.
        result = run("compile", digits_model, "-t", "arm64", "-o", tmp_path / "neon", "--rpc", address)
        assert result.returncode == 0, result.stderr
        assert "validation passed" in result.stdout


@needs_tools
def test_library_for_another_architecture_is_refused_by_the_device(digits_model, a72, tmp_path):
    result = run("compile", digits_model, "-t", "host", "-o", tmp_path / "x86", "--rpc", f"{a72.host}:{a72.port}")
    assert "cannot load a library built for host" in one_line_error(result)
    assert not (tmp_path / "x86").exists()


@needs_tools
def test_cpp_example_runs_the_library_under_qemu(digits_arm, tmp_path):
    out, _ = digits_arm
    program = build_program(ROOT / "examples" / "cpp" / "run_model.cc", tmp_path / "run_model")
    image = np.load(ROOT / "examples" / "digits" / "digits_samples.npz")["image"]
    image.tofile(tmp_path / "image.f32")
    result = subprocess.run([*qemu_command("cortex-a72"), str(program), str(out / "model.so"),
                             str(tmp_path / "image.f32"), "x".join(map(str, image.shape))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    header, values = result.stdout.strip().split(":")
    assert header == "output 0 [1 10]"
    want = reference_outputs(onnx.load(str(ROOT / "examples" / "digits" / "digits_cnn.onnx")), {"image": image})
    np.testing.assert_allclose(np.array(values.split(), dtype=np.float32), want[0].ravel(), rtol=1e-4, atol=1e-5)


@needs_tools
def test_missing_cross_compiler_is_a_one_line_error(digits_model, tmp_path):
    result = run("compile", digits_model, "-t", "cortex-a72", "-o", tmp_path / "a", "--cross-compiler",
                 "aarch64-nowhere-g++")
    assert "cross compiler aarch64-nowhere-g++ not found" in one_line_error(result)
    # The default compiler, absent from PATH: the message names the package.
    result = run("compile", digits_model, "-t", "cortex-a72", "-o", tmp_path / "b",
                 env={"PATH": str(Path(sys.executable).parent)})
    assert "apt-get install g++-aarch64-linux-gnu" in one_line_error(result)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    result = run("compile", digits_model, "-t", "host", "-o", tmp_path / "c", "--cross-compiler", "g++")
    assert "no cross compiler to replace" in one_line_error(result)


def test_tracker_without_the_key_answers_instead_of_blocking():
    with tracker() as port:
        with pytest.raises(UserError, match="has no device with key 'pi4'"):
            connect(RemoteDevice("127.0.0.1", port, key="pi4", timeout_s=10))


def _listening(port: int) -> list:
    return [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


@needs_tools
def test_servers_edgetune_starts_listen_on_loopback_only(a72):
    assert [c.laddr.ip for c in _listening(a72.port)] == ["127.0.0.1"]
    assert build_parser().parse_args(["emulate"]).host == "127.0.0.1"


@needs_tools
def test_device_lost_mid_profile_is_a_one_line_error(digits_arm):
    """The emulated device's server is SIGKILLed while `edgetune profile` times a million runs on it: the
    command ends promptly with one line naming the lost device, and the artifact is left as it was."""
    out, _ = digits_arm
    manifest = (out / "manifest.json").read_bytes()
    with emulated_device("cortex-a72") as device:
        server = psutil.Process(_listening(device.port)[0].pid)
        profile = subprocess.Popen([EDGETUNE, "profile", str(out), "--rpc", f"{device.host}:{device.port}",
                                    "--repeat", "1000000", "--warmup", "1"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not server.children() and time.monotonic() < deadline:  # the server forks once a session opens
            time.sleep(0.2)
        time.sleep(5)  # upload, load, warm-up: then the timed runs
        assert profile.poll() is None, profile.communicate()
        os.killpg(server.pid, signal.SIGKILL)
        lost = time.monotonic()
        result = subprocess.CompletedProcess(profile.args, profile.wait(timeout=120), *profile.communicate())
    assert time.monotonic() - lost < 60
    assert "lost the device (cortex-a72 emulated" in one_line_error(result)
    assert (out / "manifest.json").read_bytes() == manifest
