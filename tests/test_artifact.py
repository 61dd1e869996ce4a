"""The artifact folder: atomic, checksummed, loadable by stock TVM alone, with a sound latency log."""

import csv
import io
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgetune
from edgetune.artifact import StagedFolder, sweep_stale
from edgetune.errors import UserError

from onnx_models import conv_net, save, two_outputs
from sigkill import run_until_killed

MANIFEST_KEYS = {"schema", "created", "versions", "source", "target", "signature", "passes", "compile_seconds",
                 "validation", "latency", "files"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "convnet"
    compiled = edgetune.compile(conv_net(channels=64, size=48))  # compute-bound: ms, not microseconds
    compiled.profile(repeat=20)
    compiled.save(out)
    return out, compiled


def test_manifest_contents(saved):
    out, compiled = saved
    manifest = json.loads((out / "manifest.json").read_text())
    assert MANIFEST_KEYS <= set(manifest)
    assert set(manifest["versions"]) >= {"edgetune", "tvm", "tvm_ffi", "llvm"}
    assert manifest["versions"]["tvm"].startswith("0.27")
    assert manifest["target"]["name"] == "host" and manifest["target"]["tvm"]["kind"] == "llvm"
    assert manifest["target"]["tvm"]["num-cores"] >= 1 and manifest["target"]["tvm"]["mcpu"]
    assert len(manifest["source"]["sha256"]) == 64
    assert manifest["validation"]["passed"] is True
    assert manifest["validation"]["outputs"][0]["max_abs_err"] <= 1e-3
    assert [p["name"] for p in manifest["passes"]["ran"]][-1] == "DeadCodeElimination"
    assert set(manifest["files"]) == {"model.so", "latency.json", "latency.csv"}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())
    assert sorted(p.name for p in out.iterdir()) == ["latency.csv", "latency.json", "manifest.json", "model.so"]


def test_latency_log_schema_and_kernel_sum(saved):
    out, _ = saved
    log = json.loads((out / "latency.json").read_text())
    e2e = log["end_to_end"]
    assert {"warmup", "repeat", "threads", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms",
            "std_ms"} <= set(e2e)
    assert e2e["repeat"] == len(log["samples_ms"]) == 20
    assert e2e["min_ms"] <= e2e["p50_ms"] <= e2e["p90_ms"] <= e2e["p99_ms"] <= e2e["max_ms"]
    kernels = [k for k in log["kernels"] if k["kind"] == "kernel"]
    assert any(k["name"].startswith("fused_conv2d") for k in kernels)
    assert all(k["calls"] >= 1 and k["total_ms"] > 0 for k in kernels)
    assert abs(sum(k["share"] for k in log["kernels"]) - 100) < 0.1
    check = log["kernel_check"]
    # The calls happen inside the run: their sum cannot exceed it, and on a compute-bound model they must
    # explain most of it (what is left is the VM's own dispatch).
    assert 0 <= check["gap_pct"] < 30, check
    assert check["method"] == "instrumented" and check["end_to_end_ms"] > 0.5 * e2e["p50_ms"]
    rows = list(csv.DictReader(io.StringIO((out / "latency.csv").read_text())))
    assert rows[0]["scope"] == "end_to_end" and int(rows[0]["calls"]) == 20
    assert {r["name"] for r in rows[1:]} == {k["name"] for k in log["kernels"]}


def test_load_round_trip(saved):
    out, compiled = saved
    loaded = edgetune.load(out)
    feed = compiled.signature.random_feed(5)
    np.testing.assert_array_equal(loaded.run(feed)[0], compiled.run(feed)[0])
    assert loaded.latency.repeat == 20 and loaded.validation["passed"]
    assert loaded.latency.kernel_check() == compiled.latency.kernel_check()


def test_latency_logs_of_earlier_versions_still_load(saved):
    """Logs written before kernels could be timed alone named the kernel check's reference after the
    instrumented runs; artifacts on disk still carry them."""
    out, _ = saved
    log = json.loads((out / "latency.json").read_text())
    check = log["kernel_check"]
    check["instrumented_end_to_end_ms"] = check.pop("end_to_end_ms")
    del check["method"]
    old = edgetune.targets.LatencyReport.from_dict(log)
    assert old.kernel_timing == "instrumented"
    assert old.kernel_check()["end_to_end_ms"] == check["instrumented_end_to_end_ms"]


def test_tampered_library_is_refused(saved, tmp_path):
    out, compiled = saved
    copy = tmp_path / "copy"
    compiled.save(copy)
    with open(copy / "model.so", "r+b") as f:
        f.seek(100)
        f.write(b"\x90\x90\x90\x90")
    with pytest.raises(UserError, match="does not match the checksum"):
        edgetune.load(copy)
    (copy / "model.so").unlink()
    with pytest.raises(UserError, match="is missing"):
        edgetune.load(copy)


def test_stock_tvm_runs_the_library_in_a_fresh_process(saved):
    """Only apache-tvm (and numpy) may be imported: edgetune, onnx, onnxruntime and torch are blocked."""
    out, compiled = saved
    feed = compiled.signature.random_feed(7)
    np.save(out.parent / "x.npy", feed["x"])
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('edgetune', 'onnx', 'onnxruntime', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np, tvm
lib = tvm.runtime.load_module({str(out / 'model.so')!r})
vm = tvm.runtime.vm.VirtualMachine(lib, tvm.cpu())
y = vm['main'](tvm.runtime.tensor(np.load({str(out.parent / 'x.npy')!r}), tvm.cpu()))
np.save({str(out.parent / 'y.npy')!r}, y.numpy())
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=out.parent)
    np.testing.assert_array_equal(np.load(out.parent / "y.npy"), compiled.run(feed)[0])


def test_save_refuses_existing_folder_and_force_replaces(tmp_path):
    compiled = edgetune.compile(two_outputs())
    out = tmp_path / "m"
    compiled.save(out)
    (out / "stale.txt").write_text("from before")
    with pytest.raises(UserError, match="already exists; pass --force"):
        compiled.save(out)
    compiled.save(out, force=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or old folders left


def test_staged_folder_vanishes_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with StagedFolder(tmp_path / "x") as staged:
            staged.write_text("model.so", "half")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folders_are_created(tmp_path):
    out = edgetune.compile(two_outputs()).save(tmp_path / "a" / "b" / "m")
    assert (out / "manifest.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        edgetune.compile(two_outputs()).save(tmp_path / "file" / "m")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_what_a_killed_writer_left_is_swept_by_the_next(tmp_path):
    """A writer killed between `publish()`'s two renames leaves the previous artifact moved aside: it is put
    back; staging folders of dead writers are removed, a live writer's are left alone."""
    dead, out = _dead_pid(), tmp_path / "m"
    (tmp_path / f".m.old-{dead}-x").mkdir()
    (tmp_path / f".m.old-{dead}-x" / "manifest.json").write_text("{}")
    (tmp_path / f".m.tmp-{dead}-y").mkdir()
    (tmp_path / f".m.tmp-{os.getpid()}-z").mkdir()
    sweep_stale(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".m.tmp-{os.getpid()}-z", "m"]
    assert (out / "manifest.json").read_text() == "{}"


EDGETUNE = str(Path(sys.executable).parent / "edgetune")


@pytest.mark.parametrize("kills", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_kill_9_during_compile_never_leaves_a_partial_artifact(tmp_path, kills):
    """`edgetune compile --force` SIGKILLed at seeded random moments over a whole run: each time OUTDIR is absent
    or complete (every checksum verifies), nothing but a dead writer's hidden staging folder is beside it, and
    the next compile sweeps that away."""
    model = save(two_outputs(), tmp_path / "two.onnx")
    folder = tmp_path / "artifacts"
    out = folder / "m"
    command = [EDGETUNE, "compile", str(model), "-o", str(out), "--force", "--repeat", "1", "--warmup", "0"]
    started = time.monotonic()
    assert run_until_killed(command, 600, tmp_path / "log") == 0
    whole_run = time.monotonic() - started
    rng = random.Random(kills)
    outcomes = []
    for _ in range(kills):
        status = run_until_killed(command, rng.uniform(0, whole_run), tmp_path / "log")
        assert status in (None, 0), (tmp_path / "log").read_text()
        outcomes.append(status)
        if out.exists():
            assert edgetune.load(out).signature.input_names == ["a", "b"]
        strays = [p.name for p in folder.iterdir() if p != out]
        assert all(re.fullmatch(r"\.m\.(tmp|old)-\d+-\w+", name) for name in strays), strays
    assert run_until_killed(command, 600, tmp_path / "log") == 0
    assert [p.name for p in folder.iterdir()] == ["m"]
    assert outcomes.count(None) >= kills // 2  # most kills landed mid-run


def test_run_and_profile_refuse_another_artifacts_library(saved, tmp_path):
    """model.so swapped for another (valid) artifact's library: `run` and `profile` verify the checksums before
    loading it and refuse with one line (exit 2); nothing is loaded, nothing rewritten."""
    out, compiled = saved
    victim, other = tmp_path / "victim", tmp_path / "other"
    compiled.save(victim)
    edgetune.compile(two_outputs()).save(other)
    (victim / "model.so").write_bytes((other / "model.so").read_bytes())
    manifest = (victim / "manifest.json").read_bytes()
    np.savez(tmp_path / "in.npz", **compiled.signature.random_feed(1))
    for args in (["run", victim, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "y.npz"],
                 ["profile", victim, "--repeat", "1"]):
        result = subprocess.run([EDGETUNE, *map(str, args)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"edgetune: error: {victim / 'model.so'} does not match the checksum in manifest.json; refusing to "
            "load it (recompile, or restore the original file)"]
    assert not (tmp_path / "y.npz").exists() and (victim / "manifest.json").read_bytes() == manifest
