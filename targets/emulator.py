"""An emulated aarch64 device on this machine: edgetune's small RPC server under qemu-user.

CI has no boards, but qemu-user runs aarch64 programs on x86, and its `-cpu` refuses instructions the named core
lacks, so a wrong `mattr` fails in CI instead of on a device. The server (targets/rpc_server.cc) links the
aarch64 TVM runtime taken from the aarch64 wheels of the apache-tvm and apache-tvm-ffi versions installed here;
they are downloaded once into the cache folder and the server is cross-compiled at first use (about 2 s).
Timings under qemu measure the emulator, so the server says it is emulated and latency logs are marked.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from .arm import CROSS_COMPILER_PACKAGE, DEFAULT_CROSS_COMPILER
from .rpc import RemoteDevice

CACHE = Path(os.environ.get("EDGETUNE_CACHE", Path.home() / ".cache" / "edgetune")) / "aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")  # Debian's aarch64 libc and libstdc++, from the cross compiler
SERVER_SOURCE = Path(__file__).with_name("rpc_server.cc")
# Host tools and the Debian packages that provide them.
TOOLS = {DEFAULT_CROSS_COMPILER: CROSS_COMPILER_PACKAGE, "qemu-aarch64": "qemu-user"}
WHEELS = ("apache-tvm", "apache-tvm-ffi")
# What aarch64 programs need from those wheels: the runtime libraries and the headers of tvm-ffi and DLPack.
WHEEL_MEMBERS = ("tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so", "tvm_ffi/include/",
                 "tvm_ffi/3rdparty/dlpack/include/")
START_TIMEOUT_S = 60.0


def missing_tools() -> list[str]:
    """The Debian packages to install before anything here can run (empty: all present)."""
    return sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None}
                  | (set() if SYSROOT.is_dir() else {CROSS_COMPILER_PACKAGE}))


def check_tools() -> None:
    missing = missing_tools()
    if missing:
        raise UserError(f"the aarch64 emulator needs {' and '.join(missing)}; install with "
                        f"`apt-get install {' '.join(missing)}` (or run setup.sh as root)")


def qemu_cpus() -> list[str]:
    """The cores this qemu can emulate."""
    check_tools()
    text = subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True).stdout  # exits 1
    return [word for line in text.splitlines()[1:] for word in line.split()]


def qemu_command(cpu: str) -> list[str]:
    """The prefix that runs an aarch64 program on `cpu` (a qemu core name such as cortex-a72)."""
    cpus = qemu_cpus()
    if cpu not in cpus:
        raise UserError(f"qemu cannot emulate CPU {cpu!r}; choose one of {', '.join(cpus)}")
    return ["qemu-aarch64", "-L", str(SYSROOT), "-cpu", cpu]


def aarch64_runtime() -> Path:
    """A folder holding the aarch64 TVM runtime and tvm-ffi headers (downloaded once, then cached)."""
    versions = {name: importlib.metadata.version(name) for name in WHEELS}
    folder = CACHE / "runtime-{}".format("-".join(versions.values()))
    if folder.is_dir():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".download-") as tmp:
        wheels = Path(tmp) / "wheels"
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--platform", "manylinux_2_28_aarch64", "--python-version", python, "--implementation", "cp",
                   "--dest", str(wheels), *(f"{name}=={version}" for name, version in versions.items())]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise UserError(f"cannot download the aarch64 TVM runtime ({detail}); check the connection to PyPI")
        staged = Path(tmp) / "runtime"
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                wanted = [m for m in archive.namelist() if m.startswith(WHEEL_MEMBERS)]
                archive.extractall(staged, members=wanted)
        try:
            os.replace(staged, folder)  # whole or not at all
        except OSError:
            if not folder.is_dir():  # else a concurrent first use got there first: use its copy
                raise
    return folder


def build_program(source: Path, output: Path) -> Path:
    """Cross-compile a C++ program that uses the TVM runtime, linked (with an rpath) to the cached runtime."""
    check_tools()
    runtime = aarch64_runtime()
    libs = [runtime / "tvm" / "lib", runtime / "tvm_ffi" / "lib"]
    includes = [runtime / "tvm_ffi" / "include", runtime / "tvm_ffi" / "3rdparty" / "dlpack" / "include"]
    command = [DEFAULT_CROSS_COMPILER, "-std=c++17", "-O2", str(source), "-o", str(output),
               *(f"-I{folder}" for folder in includes), *(f"-L{lib}" for lib in libs), "-ltvm_runtime", "-ltvm_ffi",
               f"-Wl,-rpath,{':'.join(map(str, libs))}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cross-compiling {source} failed:\n{result.stderr}")
    return output


def rpc_server() -> Path:
    """The aarch64 RPC server binary, rebuilt when its source or the runtime version changes."""
    runtime = aarch64_runtime()
    digest = hashlib.sha256(SERVER_SOURCE.read_bytes() + runtime.name.encode()).hexdigest()[:16]
    binary = CACHE / f"rpc_server-{digest}"
    if not binary.is_file():
        staged = CACHE / f".{binary.name}.{os.getpid()}"
        os.replace(build_program(SERVER_SOURCE, staged), binary)
    return binary


@contextlib.contextmanager
def emulated_device(cpu: str = "cortex-a72", host: str = "127.0.0.1", port: int = 0) -> Iterator[RemoteDevice]:
    """Run an emulated `cpu` behind an RPC server on host:port (0: a free port) until the block ends."""
    command = [*qemu_command(cpu), str(rpc_server()), host, str(port), json.dumps(
        {"description": f"{cpu} emulated by qemu-aarch64 on {platform.machine()}", "emulated": True})]
    # One thread: emulated timings do not measure the device anyway, and the host's cores are shared.
    with serving(command, r"listening on \S+:(\d+)", {**os.environ, "TVM_NUM_THREADS": "1"}) as ready:
        yield RemoteDevice(host, int(ready.group(1)))


@contextlib.contextmanager
def serving(command: list[str], ready: str, env: dict[str, str] | None = None) -> Iterator[re.Match]:
    """Run a server until the block ends, once its output matches the regex `ready` (which is returned).

    It runs in a process group of its own and is stopped as a whole: servers fork a child per session, and
    that child may hold the port."""
    with tempfile.TemporaryDirectory(prefix="edgetune-server-") as folder:
        log = Path(folder) / "log"
        with open(log, "w") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                      env=env)
        try:
            yield _wait_for(server, log, re.compile(ready))
        finally:
            _stop(server)


def _wait_for(server: subprocess.Popen, log: Path, ready: re.Pattern) -> re.Match:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:  # polled: on busy cores a server may take many seconds to start
        text = log.read_text()
        match = ready.search(text)
        if match:
            return match
        if server.poll() is not None:
            raise UserError(f"{Path(server.args[0]).name} did not start: {text.strip() or 'no output'}")
        time.sleep(0.05)
    raise UserError(f"{Path(server.args[0]).name} did not start within {START_TIMEOUT_S:.0f} s; the machine may "
                    "be overloaded")


def _stop(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
