"""The `edgetune` command end to end, in subprocesses, including every bad-input case of the issue."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_models import conv_net, dangling_input, light, long_reduction, save, two_outputs, with_unsupported_ops

EDGETUNE = str(Path(sys.executable).parent / "edgetune")


def run(*args, cwd=None):
    return subprocess.run([EDGETUNE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_clean_error(result, status, *fragments):
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "conv": save(conv_net(channels=8, size=8), d / "conv.onnx"),
        "dynamic": save(conv_net(channels=8, size=8, batch="batch"), d / "dynamic.onnx"),
        "two": save(two_outputs(), d / "two.onnx"),
        "unsupported": save(with_unsupported_ops(), d / "unsupported.onnx"),
        "dangling": save(dangling_input(), d / "dangling.onnx"),
        "reduction": save(long_reduction(), d / "reduction.onnx"),
    }


def test_compile_run_profile_round_trip(models, tmp_path):
    out = tmp_path / "art"
    result = run("compile", models["conv"], "-t", "host", "-o", out, "--repeat", "10")
    assert result.returncode == 0, result.stderr
    assert "validation passed against onnxruntime" in result.stdout
    assert "p50" in result.stdout and "kernels (" in result.stdout

    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    result = run("run", out, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr
    import onnx
    from edgetune.validate import reference_outputs

    want = reference_outputs(onnx.load(str(models["conv"])), {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], want, rtol=1e-4, atol=1e-5)

    before = json.loads((out / "manifest.json").read_text())
    result = run("profile", out, "--warmup", "2", "--repeat", "7", "--threads", "1")
    assert result.returncode == 0, result.stderr
    log = json.loads((out / "latency.json").read_text())
    assert log["end_to_end"]["repeat"] == 7 and log["end_to_end"]["threads"] == 1
    after = json.loads((out / "manifest.json").read_text())
    assert after["files"]["latency.json"] != before["files"]["latency.json"]
    assert after["files"]["model.so"] == before["files"]["model.so"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "in.npz", "out.npz"]


def test_inspect_and_targets(models):
    result = run("inspect", models["unsupported"])
    assert result.returncode == 0
    assert "com.example::FancyOp  UNSUPPORTED" in result.stdout
    assert "com.example::FancyOp x2 (fancy_a, fancy_b)" in result.stdout
    result = run("inspect", light("light_squeezenet"), "--json")
    info = json.loads(result.stdout)
    assert info["ops"]["Conv"] == 26 and info["unsupported"] == {}
    assert info["inputs"] == [{"name": "data_0", "dtype": "float32", "shape": [1, 3, 224, 224]}]
    result = run("inspect", light("light_squeezenet"), "--passes", "--json")
    stages = {record["name"]: record for record in json.loads(result.stdout)}
    assert stages["FoldScaleIntoWeights"]["changes"] == {}  # SqueezeNet has no BatchNorm: nothing to fold
    assert stages["FuseTIR"]["kernels"][1] < stages["FuseTIR"]["kernels"][0]
    assert stages["BlockedLayout"]["changes"]["relax.layout_transform"] > 0
    text = run("inspect", models["conv"], "--passes").stdout
    assert text.splitlines()[0].split() == ["pass", "seconds", "what", "changed"] and "FuseTIR" in text
    result = run("targets")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    host = next(i for i, line in enumerate(lines) if line.startswith("host:"))  # presets are listed by name
    assert json.loads(lines[host + 1])["kind"] == "llvm"


def test_dynamic_batch_with_input_shape(models, tmp_path):
    result = run("compile", models["dynamic"], "-o", tmp_path / "d", "--input-shape", "x=2x3x8x8", "--repeat", "3")
    assert result.returncode == 0, result.stderr
    sig = json.loads((tmp_path / "d" / "manifest.json").read_text())["signature"]
    assert sig["inputs"][0]["shape"] == [2, 3, 8, 8] and sig["outputs"][0]["shape"] == [2, 10]


def test_validation_failure_exits_3_and_keeps_failed_artifact(models, tmp_path):
    out = tmp_path / "r"
    result = run("compile", models["reduction"], "-o", out, "--atol", "0", "--rtol", "0")
    assert_clean_error(result, 3, "validation FAILED", "beyond atol=0, rtol=0", f"kept in {out}.failed")
    assert not out.exists()
    manifest = json.loads((tmp_path / "r.failed" / "manifest.json").read_text())
    assert manifest["validation"]["passed"] is False
    assert manifest["validation"]["outputs"][0]["max_abs_err"] > 0


BAD_COMPILES = [
    ("missing file", lambda m, t: ["compile", t / "nope.onnx", "-o", t / "o"], ["does not exist"]),
    ("not onnx", lambda m, t: ["compile", _write(t / "x.onnx", b"PK\x03\x04 zip, not onnx" * 50), "-o", t / "o"],
     ["is not an ONNX model"]),
    ("checker", lambda m, t: ["compile", m["dangling"], "-o", t / "o"], ["fails onnx.checker"]),
    ("unsupported", lambda m, t: ["compile", m["unsupported"], "-o", t / "o"],
     ["unsupported operators:", "FancyOp x2 (fancy_a, fancy_b)", "OtherOp x1 (other_1)"]),
    ("dynamic dims", lambda m, t: ["compile", m["dynamic"], "-o", t / "o"],
     ["input 'x' has dynamic dimensions [batch, 3, 8, 8]", "--input-shape x="]),
    ("unknown target", lambda m, t: ["compile", m["conv"], "-t", "tpu9", "-o", t / "o"],
     ["unknown target 'tpu9'", "valid targets: arm64, cortex-a53, cortex-a72, cortex-a76, cuda-multi, cuda-sm75, "
                               "cuda-sm80, cuda-sm86, cuda-sm87, cuda-sm89, cuda-sm90, host, neoverse-n1"]),
    ("bad shape flag", lambda m, t: ["compile", m["dynamic"], "-o", t / "o", "--input-shape", "y=1x3x8x8"],
     ["unknown input y"]),
    ("input names", lambda m, t: ["compile", m["two"], "-o", t / "o", "--inputs", _npz(t, a=np.zeros((2, 5), "f4"))],
     ["missing b"]),
    ("input shape", lambda m, t: ["compile", m["conv"], "-o", t / "o", "--inputs", _npz(t, x=np.zeros((1, 3, 9, 9), "f4"))],
     ["x: float32[1x3x9x9] does not match", "x: float32[1x3x8x8]"]),
    ("input dtype", lambda m, t: ["compile", m["conv"], "-o", t / "o", "--inputs", _npz(t, x=np.zeros((1, 3, 8, 8), "f8"))],
     ["float64[1x3x8x8] does not match"]),
    ("opt level", lambda m, t: ["compile", m["conv"], "-o", t / "o", "--opt-level", "9"], ["--opt-level 9"]),
    ("no such flag", lambda m, t: ["compile", m["conv"], "-o", t / "o", "--fast"], ["unrecognized arguments: --fast"]),
]


def _write(path, data):
    path.write_bytes(data)
    return path


def _npz(tmp_path, **arrays):
    path = tmp_path / "feed.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, make_args, fragments", BAD_COMPILES, ids=[c[0] for c in BAD_COMPILES])
def test_bad_compile_input(models, tmp_path, case, make_args, fragments):
    args = make_args(models, tmp_path)
    before = set(tmp_path.iterdir())
    assert_clean_error(run(*args), 2, *fragments)
    assert set(tmp_path.iterdir()) == before  # nothing half-written


def test_existing_outdir_needs_force(models, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_clean_error(run("compile", models["conv"], "-o", out), 2, "already exists; pass --force")
    assert (out / "keep.txt").read_text() == "mine"
    result = run("compile", models["conv"], "-o", out, "--force", "--repeat", "2")
    assert result.returncode == 0 and not (out / "keep.txt").exists()


def test_run_and_profile_bad_input(models, tmp_path):
    out = tmp_path / "a"
    assert run("compile", models["two"], "-o", out, "--repeat", "2").returncode == 0
    bad = _npz(tmp_path, a=np.zeros((2, 5), "f4"), b=np.zeros((2, 5), "i4"))
    assert_clean_error(run("run", out, "--inputs", bad, "--outputs", tmp_path / "y.npz"), 2,
                       "input b: int32[2x5] does not match the model's b: float32[2x5]")
    assert not (tmp_path / "y.npz").exists()
    assert_clean_error(run("run", tmp_path / "nothing", "--inputs", bad, "--outputs", tmp_path / "y.npz"), 2,
                       "is not an edgetune artifact folder")
    assert_clean_error(run("run", out, "--inputs", tmp_path / "none.npz", "--outputs", tmp_path / "y.npz"), 2,
                       "inputs file", "does not exist")
    assert_clean_error(run("profile", out, "--repeat", "0"), 2, "--repeat >= 1")
    with open(out / "model.so", "ab") as f:
        f.write(b"tampered")
    assert_clean_error(run("profile", out), 2, "does not match the checksum")


def test_internal_error_exit_1_names_traceback_file(tmp_path):
    """An unexpected exception becomes exit 1 with the path of a traceback file, never a dump."""
    script = ("import sys, edgetune.cli as c\n"
              "c.COMMANDS['targets'] = lambda a: 1 / 0\n"
              "sys.exit(c.main(['targets']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    assert_clean_error(result, 1, "internal error: ZeroDivisionError", "traceback written to")
    (log,) = tmp_path.glob("edgetune-crash-*.log")
    assert "ZeroDivisionError" in log.read_text()


def test_profile_soak_keeps_resident_memory_flat(models, tmp_path):
    """`edgetune profile --repeat 10000`: the process's resident size after the timed runs is within 5% of
    before them, and the command reports both."""
    out = tmp_path / "a"
    assert run("compile", models["conv"], "-o", out, "--repeat", "2").returncode == 0
    result = run("profile", out, "--repeat", "10000")
    assert result.returncode == 0, result.stderr
    log = json.loads((out / "latency.json").read_text())
    memory = log["memory"]
    assert log["end_to_end"]["repeat"] == 10000 and memory["rss_before_mb"] > 0
    assert memory["growth_pct"] < 5, memory
    assert f"resident memory {memory['rss_before_mb']:.1f} MB before the timed runs" in result.stdout
