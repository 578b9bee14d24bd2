"""Start, recognise and stop the sandbox's child processes.

A pid alone can be reused after a crash or a reboot, so every record also keeps the process's
start time from /proc: `down` only signals a pid whose start time still matches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


class ExitedAtOnce(RuntimeError):
    """The process ended before it could be recorded; its log says why."""

    def __init__(self, name: str, log: Path):
        super().__init__(f"{name} exited at once; see {log}")
        self.name, self.log = name, log


@dataclass
class ProcessRecord:
    """One process the sandbox started, as saved in its state file."""

    name: str
    kind: str  # "backend", or a service's name
    pid: int
    start_ticks: int
    command: list[str]
    log: str
    url: str
    health_url: str
    # From the supervisor (`supervision.json`): times it started the process again, and how
    # the process last ended.
    restarts: int = 0
    last_exit: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ProcessRecord:
        return cls(**data)


# Processes started by this Python process: polling them reaps the ones that exited, which
# would otherwise linger as zombies and still look alive.
_CHILDREN: dict[int, subprocess.Popen] = {}


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it is gone."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left
        return None
    return int(fields[19])


def is_running(record: ProcessRecord) -> bool:
    return start_ticks(record.pid) == record.start_ticks


def launch(name: str, kind: str, command: list[str], log: Path, url: str, health_url: str,
           env: dict[str, str] | None = None) -> ProcessRecord:
    """Start a command detached from this terminal, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A session of its own: Ctrl-C in the user's shell does not reach it, and stopping the
        # group later also stops its children (nginx workers).
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    _CHILDREN[process.pid] = process
    ticks = start_ticks(process.pid)
    if ticks is None:
        raise ExitedAtOnce(name, log)
    return ProcessRecord(name, kind, process.pid, ticks, command, str(log), url, health_url)


def stop(record: ProcessRecord, grace_s: float = 5.0) -> bool:
    """Stop one recorded process and its group; True when something was running."""
    if not is_running(record):
        return False
    _signal_group(record.pid, signal.SIGTERM)
    if not wait_until(lambda: not is_running(record), grace_s):
        _signal_group(record.pid, signal.SIGKILL)
        wait_until(lambda: not is_running(record), grace_s)
    return True


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `condition` until it holds or the deadline passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
