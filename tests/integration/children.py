"""Stopping the processes a test started itself (outside a sandbox), also when it failed."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable


def stop_children(processes: Iterable[subprocess.Popen], grace_s: float = 10) -> None:
    """SIGTERM to all at once (a stopped one is continued first: it cannot act on SIGTERM),
    then wait for each, SIGKILL after `grace_s`."""
    processes = list(processes)
    for process in processes:
        process.send_signal(signal.SIGCONT)
        process.terminate()
    for process in processes:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace_s)
