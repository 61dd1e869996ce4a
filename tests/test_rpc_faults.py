"""Devices that stop answering without closing the connection (a wedged board): connecting, profiling and
tuning end with a clear error or a failed candidate within the timeouts, never a hang.

A wedged device is simulated by stopping (SIGSTOP) every process of a TVM RPC server on 127.0.0.1: the
kernel keeps its sockets open and accepts connections, nothing answers. The server is TVM's own Python one,
so no emulator is needed; the libraries are host builds.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edgetune.errors import UserError
from edgetune.targets.emulator import serving
from edgetune.targets.rpc import RemoteDevice, connect

from onnx_models import conv_net, save
from rpc_farm import BOUND, farm

EDGETUNE = str(Path(sys.executable).parent / "edgetune")
SERVER = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", "9500", "--port-end", "9600"]


def _server_processes(port: int) -> list[psutil.Process]:
    """Every process holding a socket on `port` (the listener and its session workers)."""
    processes = []
    for pid in {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.pid}:
        with contextlib.suppress(psutil.NoSuchProcess):  # a session worker that just ended
            processes.append(psutil.Process(pid))
    return processes


def _session_open(port: int) -> bool:
    return any(c.status == psutil.CONN_ESTABLISHED for c in psutil.net_connections("tcp")
               if c.laddr and c.laddr.port == port)


@contextlib.contextmanager
def wedged(port: int):
    processes = _server_processes(port)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.suspend()
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


@pytest.fixture(scope="module")
def host_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "conv"
    model = save(conv_net(channels=32, size=64), out.parent / "conv.onnx")  # about 1 ms a run
    result = subprocess.run([EDGETUNE, "compile", str(model), "-o", str(out)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def test_connect_to_a_wedged_server_times_out_with_a_clear_error():
    with serving(SERVER, BOUND) as ready:
        port = int(ready.group(1))
        with wedged(port):
            started = time.monotonic()
            with pytest.raises(UserError, match="accepted the connection but did not answer within 3 s"):
                connect(RemoteDevice("127.0.0.1", port, timeout_s=3))
            assert time.monotonic() - started < 20


def test_device_wedged_mid_profile_is_a_one_line_error(host_artifact):
    """`edgetune profile --repeat 1000000` on a device that stops answering during the timed runs: one line
    naming the problem within the timeout (plus the request in flight), and the artifact left as it was."""
    manifest = (host_artifact / "manifest.json").read_bytes()
    with serving(SERVER, BOUND) as ready:
        port = int(ready.group(1))
        profile = subprocess.Popen([EDGETUNE, "profile", str(host_artifact), "--rpc", f"127.0.0.1:{port}",
                                    "--repeat", "1000000", "--warmup", "1", "--rpc-timeout", "5"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not _session_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # upload, load, warm-up: then the timed runs
        assert profile.poll() is None, profile.communicate()
        with wedged(port):
            stopped = time.monotonic()
            status = profile.wait(timeout=120)
            waited = time.monotonic() - stopped
        stdout, stderr = profile.communicate()
    assert status == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "stopped answering" in lines[0] and "--rpc-timeout" in lines[0], stderr
    assert waited < 5 + 2 * 5.0 + 15  # timeout + the request in flight (at most twice its ~5 s) + start-up slack
    assert (host_artifact / "manifest.json").read_bytes() == manifest


@pytest.mark.slow
def test_device_wedged_mid_tune_fails_its_candidates_and_tuning_ends(tmp_path):
    """Two devices of a tracker, one wedged before tuning starts: its candidates fail after the runner's
    timeout, the other device measures the rest, and the run ends with the records it measured."""
    from edgetune.autotune import TuningDatabase
    from edgetune.targets import get_target

    model = save(conv_net(channels=8, size=8), tmp_path / "conv.onnx")
    with farm(2) as (port, servers), wedged(servers[0]):
        result = subprocess.run([EDGETUNE, "tune", str(model), "--trials", "8", "--db", str(tmp_path / "db"),
                                 "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "farm", "--rpc-timeout", "10"],
                                capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert int(re.search(r"(\d+) candidates measured now", result.stdout).group(1)) >= 1
    records = TuningDatabase(tmp_path / "db", get_target("host").tvm_target()).ms.get_all_tuning_records()
    measured = [r for r in records if r.run_secs and all(float(s) < 1e9 for s in r.run_secs)]
    assert measured


def _can_unshare_network() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True).returncode == 0


@pytest.mark.ci
@pytest.mark.skipif(not _can_unshare_network(), reason="needs root, unshare and ip to cut a private network")
def test_device_that_vanishes_from_the_network_is_noticed_by_keepalive(host_artifact):
    """The device's network disappears mid-profile (a private namespace's loopback taken down: no reset, no
    FIN, the peer just goes silent). With a 600 s request timeout, only TCP keepalive can notice in time."""
    result = subprocess.run(["unshare", "-n", sys.executable, str(Path(__file__).parent / "vanished_device.py"),
                             str(host_artifact), "600"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    lines = outcome["stderr"].strip().splitlines()
    assert outcome["status"] == 2 and len(lines) == 1 and "lost the device" in lines[0], outcome
    assert outcome["waited_s"] < 60, outcome
