"""Running a compiled library on a remote device over TVM RPC: connect, upload, load, run.

The one place that reaches devices, so that running, profiling and (later) measuring tuning candidates do it
the same way: directly (`--rpc HOST:PORT`: a board running TVM's RPC server, or `edgetune emulate`) or
through a tracker (`--rpc-tracker HOST:PORT --rpc-key KEY`). Every network step is bounded: TVM's tracker
answers a request for a key that no server offers by waiting forever, a connect to an unreachable host
waits for the kernel's TCP timeout, and TVM's RPC client has no timeout at all: a device that stops answering
without closing the connection (a wedged board, a pulled cable) would block its caller forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator

import psutil
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
    # To connect, for a tracker to hand out a free device, and for the device to answer any one request
    # (beyond the time the request is expected to take).
    timeout_s: float = 60.0

    @classmethod
    def from_flags(cls, server: str | None, tracker: str | None, key: str | None,
                   timeout_s: float = 60.0) -> RemoteDevice | None:
        """The device named by `--rpc`, or `--rpc-tracker` with `--rpc-key`; None when neither is given."""
        if not timeout_s > 0:
            raise UserError(f"--rpc-timeout must be a positive number of seconds (got {timeout_s})")
        if server and tracker:
            raise UserError("give either --rpc HOST:PORT or --rpc-tracker HOST:PORT --rpc-key KEY, not both")
        if tracker and not key:
            raise UserError("--rpc-tracker needs --rpc-key KEY, the device queue to take a device from "
                            "(list them with `python -m tvm.exec.query_rpc_tracker`)")
        if key and not tracker:
            raise UserError("--rpc-key needs --rpc-tracker HOST:PORT")
        if tracker:
            return cls(*parse_address(tracker, "--rpc-tracker"), key=key, timeout_s=timeout_s)
        return cls(*parse_address(server, "--rpc"), timeout_s=timeout_s) if server else None

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
    return _connect(device, session_timeout_s)[0]


def _connect(device: RemoteDevice, session_timeout_s: float = 0) -> tuple[rpc.RPCSession, frozenset[int]]:
    """The session and its sockets (file descriptors), which carry TCP keepalive: a peer that vanished
    without closing the connection (power, cable) fails the next blocked request within about 30 s."""
    before = _tcp_sockets()
    # through a tracker: its own socket timeout bounds the wait for a free device, then the handshake follows
    limit = device.timeout_s * (2 if device.key else 1)
    with _deadline(limit, lambda: _tcp_sockets() - before) as expired:
        try:
            session = _open(device, session_timeout_s)
        except Exception:
            if expired:
                role = "device's RPC server" if device.key is None else "device the tracker handed out"
                raise UserError(f"the {role} ({device}) accepted the connection but did not answer within "
                                f"{device.timeout_s:.0f} s; check the device (or raise --rpc-timeout)") from None
            raise
    sockets = frozenset(_tcp_sockets() - before)
    for fd in sockets:
        _keep_alive(fd)
    return session, sockets


def _open(device: RemoteDevice, session_timeout_s: float) -> rpc.RPCSession:
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


def _tcp_sockets() -> set[int]:
    return {c.fd for c in psutil.Process().net_connections("tcp") if c.fd >= 0}


def _keep_alive(fd: int) -> None:
    """Probe an idle connection after 10 s, every 5 s, and drop it after 4 unanswered probes (or 30 s of
    unacknowledged data): a long request is an idle connection whose peer's kernel still answers probes."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4),
                              ("TCP_USER_TIMEOUT", 30_000)):
            if hasattr(socket, option):  # Linux; elsewhere the system's keepalive defaults apply
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


@contextlib.contextmanager
def _deadline(seconds: float, sockets: Callable[[], Iterable[int]]) -> Iterator[list[bool]]:
    """Shuts `sockets` down if the block has not finished after `seconds`; the yielded list is then
    non-empty. A request blocked in TVM's RPC client (which releases the GIL while it waits) then fails at
    once, where it would otherwise wait forever for a device that stopped answering."""
    expired: list[bool] = []
    lock = threading.Lock()
    finished = False

    def expire() -> None:
        with lock:
            if finished:
                return
            expired.append(True)
            for fd in sockets():
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        with lock:
            finished = True
        timer.cancel()


# How long a lost session's server gets to open a new one, when telling a lost device from a lost session.
PROBE_TIMEOUT_S = 10.0


def _server_answers(device: RemoteDevice) -> bool:
    """Whether the device's server opens a new session (a listening socket alone may be a server being torn
    down)."""
    try:
        connect(replace(device, timeout_s=min(device.timeout_s, PROBE_TIMEOUT_S)))
        return True
    except Exception:  # noqa: BLE001 - refused, reset mid-handshake, timed out: all mean it does not answer
        return False


@dataclass
class RemoteSession(Session):
    """A library loaded on a remote device; a device that drops the session is reported, not a crash."""

    remote: Any = None  # tvm.rpc.RPCSession: keeps the connection open while the module is in use
    built_for: str = ""
    address: RemoteDevice | None = None
    sockets: frozenset[int] = frozenset()  # the session's connection
    unanswered: list[bool] = field(default_factory=list)  # non-empty once a request outlived its deadline

    def running(self) -> ContextManager[None]:
        return _reporting_lost_device(self)

    def request(self, expected_s: float = 0.0) -> ContextManager[None]:
        return bounded_request(self.address.timeout_s, self.sockets, self.unanswered, expected_s)


@contextlib.contextmanager
def bounded_request(timeout_s: float, sockets: frozenset[int], unanswered: list[bool],
                    expected_s: float = 0.0) -> Iterator[None]:
    """One request on a session's connection (`sockets`): shut down, and noted in `unanswered`, when it has
    no answer `timeout_s` after the `expected_s` it should take. (A function of the session's parts, so that
    what keeps a request function does not keep the session and its connection alive.)"""
    with _deadline(timeout_s + expected_s, lambda: sockets) as expired:
        try:
            yield
        finally:
            unanswered.extend(expired)


# Bytes per second an upload is expected to reach at least (a slow board on a slow link).
MIN_UPLOAD_RATE = 1e6


def open_session(device: RemoteDevice, library: Path, target: Target) -> RemoteSession:
    """Upload `library` to the device, load it there and create its VM on the target's device type there."""
    remote, sockets = _connect(device)
    session = RemoteSession(None, None, None, device_name=f"remote device {device}", threads=0, remote=remote,
                            built_for=_built_for(target), address=device, sockets=sockets)
    with session.running():
        with session.request():
            session.device_name, session.emulated = _describe(remote, device)
        with session.request(library.stat().st_size / MIN_UPLOAD_RATE):
            remote.upload(str(library), target=library.name)
        try:
            with session.request():
                session.module = remote.load_module(library.name)
        except RPCError as exc:  # e.g. an x86 library on an ARM board: "cannot open shared object file"
            if session.unanswered or not _alive(session):
                raise  # a lost device: reported by the guard
            raise UserError(f"the device ({session.device_name}) cannot load a library built for {target.name} "
                            f"({session.built_for}); compile for the device's target (see `edgetune targets`): "
                            f"{str(exc).strip().splitlines()[-1]}") from None
        with session.request():
            session.device = remote.device(target.device_type, 0)
            session.vm = VirtualMachine(session.module, session.device)
            session.threads = int(remote.get_function("runtime.NumThreads")())
    session.kernels_skipped = NO_REMOTE_BREAKDOWN
    return session


@contextlib.contextmanager
def _reporting_lost_device(session: RemoteSession) -> Iterator[None]:
    """A lost session is reported as what it most likely was: a request that outlived its deadline, a device
    that stopped answering; a server that no longer answers disconnected (a board unplugged, a server killed);
    one that still answers ended only this session, the signature of an instruction its core lacks (SIGILL
    kills the server's session). Any other failure passes through unchanged."""
    try:
        yield
    except EdgetuneError:
        raise
    except Exception:
        timeout = session.address.timeout_s
        if session.unanswered:
            raise UserError(f"the device ({session.device_name}) stopped answering: a request got no answer "
                            f"within {timeout:.0f} s beyond its expected time; check the device and restart its "
                            "server (or raise --rpc-timeout for a device that is just slow)") from None
        if _alive(session):
            raise
        if not _server_answers(session.address):
            raise UserError(f"lost the device ({session.device_name}) while running the library: its RPC server "
                            "stopped answering; check the device and restart its server, then run again") from None
        raise UserError(
            f"the library uses instructions the device's CPU lacks (built for {session.built_for}, device "
            f"{session.device_name}): the device's RPC server ended the session while running it; compile for "
            "the device's core (see `edgetune targets`)") from None


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


def _alive(session: RemoteSession) -> bool:
    try:
        with session.request():
            session.remote.get_function("runtime.NumThreads")()
        return True
    except Exception:  # noqa: BLE001 - any failure of a trivial call means the session is gone
        return False
