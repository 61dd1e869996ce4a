"""Run inside a private network namespace (`unshare -n`, root): profile a host artifact on a TVM RPC server
on this namespace's loopback, then take the loopback down mid-profile, a device vanishing from the network
with no reset and no FIN. Prints JSON: the profile's exit status, stderr and seconds from the cut to its end.

Usage: python vanished_device.py ARTIFACT RPC_TIMEOUT_S
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from edgetune.targets.emulator import serving

from rpc_farm import BOUND

EDGETUNE = str(Path(sys.executable).parent / "edgetune")


def main(artifact: str, rpc_timeout: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", "9500",
              "--port-end", "9600"]
    with serving(server, BOUND) as ready:
        port = int(ready.group(1))
        profile = subprocess.Popen([EDGETUNE, "profile", artifact, "--rpc", f"127.0.0.1:{port}", "--repeat",
                                    "1000000", "--warmup", "1", "--rpc-timeout", rpc_timeout],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                c.status == psutil.CONN_ESTABLISHED for c in psutil.net_connections("tcp") if c.laddr.port == port):
            time.sleep(0.2)
        time.sleep(5)  # upload, load, warm-up: then the timed runs
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        cut = time.monotonic()
        try:
            status = profile.wait(timeout=300)
        finally:
            profile.kill()
        waited = time.monotonic() - cut
        stderr = profile.communicate()[1]
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # lets the server shut down cleanly
    print(json.dumps({"status": status, "stderr": stderr, "waited_s": waited}))


if __name__ == "__main__":
    main(*sys.argv[1:])
