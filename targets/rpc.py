"""Running a compiled library on a remote device over TVM RPC: connect, upload, load, run.

The one place that reaches devices, so that running, profiling and (later) measuring tuning candidates do it
the same way: directly (`--rpc HOST:PORT`: a board running TVM's RPC server, or `edgetune emulate`) or
through a tracker (`--rpc-tracker HOST:PORT --rpc-key KEY`). Every network step is bounded: TVM's tracker
answers a request for a key that no server offers by waiting forever, and a connect to an unreachable host
waits for the kernel's TCP timeout.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterator

from tvm import rpc
from tvm.error import RPCError
from tvm.runtime.vm import VirtualMachine

from ..errors import EdgetuneError, UserError
from .base import Session, Target

# Registered by edgetune's own server (targets/rpc_server.cc): JSON {"description": str, "emulated": bool}.
DEVICE_INFO_FUNCTION = "edgetune.rpc.device"
NO_REMOTE_BREAKDOWN = ("the VM's per-call instrument is a host callback, which TVM RPC cannot pass to a remote "
                       "device, and the artifact has no kernel library to time its kernels one at a time "
                       "(compiled by an older edgetune, or for a target without one); only end-to-end times "
                       "were measured")


@dataclass(frozen=True)
class RemoteDevice:
    """Where a device is: an RPC server at host:port, or, with `key`, the queue `key` of a tracker there."""

    host: str
    port: int
    key: str | None = None
    timeout_s: float = 30.0  # to connect, and for a tracker to hand out a free device

    @classmethod
    def from_flags(cls, server: str | None, tracker: str | None, key: str | None) -> RemoteDevice | None:
        """The device named by `--rpc`, or `--rpc-tracker` with `--rpc-key`; None when neither is given."""
        if server and tracker:
            raise UserError("give either --rpc HOST:PORT or --rpc-tracker HOST:PORT --rpc-key KEY, not both")
        if tracker and not key:
            raise UserError("--rpc-tracker needs --rpc-key KEY, the device queue to take a device from "
                            "(list them with `python -m tvm.exec.query_rpc_tracker`)")
        if key and not tracker:
            raise UserError("--rpc-key needs --rpc-tracker HOST:PORT")
        if tracker:
            return cls(*parse_address(tracker, "--rpc-tracker"), key=key)
        return cls(*parse_address(server, "--rpc")) if server else None

    def __str__(self) -> str:
        return f"key {self.key} at tracker {self.host}:{self.port}" if self.key else f"{self.host}:{self.port}"


def parse_address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{flag} {text!r} is not HOST:PORT (for example 127.0.0.1:9090)")
    return host, int(port)


def connect(device: RemoteDevice, session_timeout_s: float = 0) -> rpc.RPCSession:
    """An RPC session with the device; through its tracker when the device has a key. With
    `session_timeout_s`, the device's server ends the session after that long (0: never)."""
    _check_reachable(device)
    if device.key is None:
        return rpc.connect(device.host, device.port, session_timeout=session_timeout_s)
    tracker = _tracker(device)
    try:
        queues = tracker.summary().get("queue_info", {})
        _check_key(device, queues, device.key in queues)
        return tracker.request(device.key, max_retry=1, session_timeout=session_timeout_s)
    except RuntimeError as exc:
        if "timed out" in str(exc):
            raise UserError(f"no device with key {device.key!r} became free at tracker {device.host}:"
                            f"{device.port} within {device.timeout_s:.0f} s; retry when one is free") from None
        raise
    finally:
        tracker.close()


def tracker_devices(device: RemoteDevice) -> int:
    """How many devices the tracker has registered under `device.key` (free or busy); a clear error when it
    has none, instead of a request that would wait forever."""
    _check_reachable(device)
    tracker = _tracker(device)
    try:
        queues = tracker.summary().get("queue_info", {})
    finally:
        tracker.close()
    queue = queues.get(device.key) or {}
    count = int(queue.get("free", 0)) + int(queue.get("pending", 0))
    _check_key(device, queues, count > 0)
    return count


def _tracker(device: RemoteDevice) -> rpc.TrackerSession:
    tracker = rpc.connect_tracker(device.host, device.port)
    tracker._sock.settimeout(device.timeout_s)  # TrackerSession has no timeout of its own
    return tracker


def _check_key(device: RemoteDevice, queues: dict, has_device: bool) -> None:
    """A clear error when the tracker has no device for the key (a request would wait forever)."""
    if not has_device:
        raise UserError(f"tracker {device.host}:{device.port} has no device with key {device.key!r} "
                        f"(keys: {', '.join(sorted(queues)) or 'none'}); check --rpc-key")


def _check_reachable(device: RemoteDevice) -> None:
    role = "tracker" if device.key else "RPC server"
    try:
        socket.create_connection((device.host, device.port), timeout=device.timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach the {role} at {device.host}:{device.port} ({exc.strerror or exc}); "
                        "start it (for an emulated device: `edgetune emulate`) or fix the address") from None


def _server_answers(device: RemoteDevice) -> bool:
    """Whether the device's server opens a new session (a listening socket alone may be a server being torn
    down)."""
    try:
        connect(device)
        return True
    except Exception:  # noqa: BLE001 - refused, reset mid-handshake, timed out: all mean it does not answer
        return False


@dataclass
class RemoteSession(Session):
    """A library loaded on a remote device; a device that drops the session is reported, not a crash."""

    remote: Any = None  # tvm.rpc.RPCSession: keeps the connection open while the module is in use
    built_for: str = ""
    address: RemoteDevice | None = None

    def running(self) -> ContextManager[None]:
        return _reporting_lost_device(self.remote, self.built_for, self.device_name, self.address)


def open_session(device: RemoteDevice, library: Path, target: Target) -> RemoteSession:
    """Upload `library` to the device, load it there and create its VM on the target's device type there."""
    remote = connect(device)
    description, emulated = _describe(remote, device)
    built_for = _built_for(target)
    with _reporting_lost_device(remote, built_for, description, device):
        remote.upload(str(library), target=library.name)
        try:
            module = remote.load_module(library.name)
        except RPCError as exc:  # e.g. an x86 library on an ARM board: "cannot open shared object file"
            if not _alive(remote):
                raise  # a lost device: reported by the guard
            raise UserError(f"the device ({description}) cannot load a library built for {target.name} "
                            f"({built_for}); compile for the device's target (see `edgetune targets`): "
                            f"{str(exc).strip().splitlines()[-1]}") from None
        remote_device = remote.device(target.device_type, 0)
        vm = VirtualMachine(module, remote_device)
    return RemoteSession(module, remote_device, vm, device_name=description,
                         threads=int(remote.get_function("runtime.NumThreads")()), emulated=emulated,
                         kernels_skipped=NO_REMOTE_BREAKDOWN, remote=remote, built_for=built_for, address=device)


@contextlib.contextmanager
def _reporting_lost_device(remote: rpc.RPCSession, built_for: str, device_name: str,
                           device: RemoteDevice) -> Iterator[None]:
    """A lost session is reported as what it most likely was: a server that no longer answers disconnected
    (a board unplugged, a server killed); one that still answers ended only this session, the signature of an
    instruction its core lacks (SIGILL kills the server's session). Any other failure passes through unchanged."""
    try:
        yield
    except EdgetuneError:
        raise
    except Exception:
        if _alive(remote):
            raise
        if not _server_answers(device):
            raise UserError(f"lost the device ({device_name}) while running the library: its RPC server stopped "
                            "answering; check the device and restart its server, then run again") from None
        raise UserError(
            f"the library uses instructions the device's CPU lacks (built for {built_for}, device {device_name}): "
            "the device's RPC server ended the session while running it; compile for the device's core (see "
            "`edgetune targets`)") from None


def _describe(remote: rpc.RPCSession, device: RemoteDevice) -> tuple[str, bool]:
    """The device as its server describes itself (edgetune's server), else by its address."""
    try:
        info = json.loads(remote.get_function(DEVICE_INFO_FUNCTION)())
    except AttributeError:  # a stock TVM server: it cannot say what it runs on
        return f"remote device {device}", False
    return f"{info['description']} at {device}", bool(info["emulated"])


def _built_for(target: Target) -> str:
    attrs = target.tvm_target().attrs
    mattr = ",".join(str(a) for a in attrs.get("mattr", []))
    return f"mcpu={attrs.get('mcpu') or 'generic'} mattr={mattr or 'none'}"


def _alive(remote: Any) -> bool:
    try:
        remote.get_function("runtime.NumThreads")()
        return True
    except Exception:  # noqa: BLE001 - any failure of a trivial call means the session is gone
        return False
