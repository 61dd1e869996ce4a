"""Killing a command with SIGKILL at a chosen moment, as a power cut or the OOM killer would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def run_until_killed(command: list[str], seconds: float, log: Path) -> int | None:
    """Run `command` in a process group of its own (stderr to `log`) and SIGKILL the whole group (its worker
    processes too) after `seconds`; returns its exit status, or None when the kill came first."""
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        return None
