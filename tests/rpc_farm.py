"""A TVM RPC tracker on 127.0.0.1 with TVM's own Python RPC servers registered under one key, for the tests
that measure on or fault a small device farm."""

import contextlib
import sys
import time
from typing import Iterator

from edgetune.errors import UserError
from edgetune.targets.emulator import serving
from edgetune.targets.rpc import RemoteDevice, tracker_devices

BOUND = r"bind to 127\.0\.0\.1:(\d+)"  # what TVM's tracker and server print once listening


@contextlib.contextmanager
def tracker(port: int = 9190) -> Iterator[int]:
    """A tracker; yields its port."""
    command = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
               "--port-end", str(port + 100)]
    with serving(command, BOUND) as ready:
        yield int(ready.group(1))


@contextlib.contextmanager
def farm(servers: int, key: str = "farm") -> Iterator[tuple[int, list[int]]]:
    """A tracker with `servers` servers registered under `key`; yields (tracker port, server ports) once the
    tracker counts them all."""
    with tracker() as port, contextlib.ExitStack() as stack:
        command = [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", key,
                   "--host", "127.0.0.1", "--port", "9300", "--port-end", "9400"]
        ports = [int(stack.enter_context(serving(command, BOUND)).group(1)) for _ in range(servers)]
        device = RemoteDevice("127.0.0.1", port, key=key, timeout_s=10)
        for _ in range(300):  # registration follows the bind by a moment
            with contextlib.suppress(UserError):
                if tracker_devices(device) == servers:
                    break
            time.sleep(0.1)
        assert tracker_devices(device) == servers
        yield port, ports
