"""One sandbox's record of itself, and one `up` in progress.

`SandboxState` is what `up` saves as it goes (the ports it took, the processes it started, the
files the services share), so `down`, `status` and `keys` work from it, also after a crash.
`SandboxRun` is the `up` that writes it: it claims ports, launches processes and waits for
their health checks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.errors import LlmfleetError
from llmfleet.local.sandbox.health import answers
from llmfleet.local.sandbox.ports import LOOPBACK, pick_ports, port_is_free
from llmfleet.local.sandbox.processes import (
    ExitedAtOnce,
    ProcessRecord,
    is_running,
    launch,
    wait_until,
)
from llmfleet.local.sandbox.supervisor import PROCESS as SUPERVISOR
from llmfleet.local.sandbox.supervisor import SupervisorError, ask, read_supervision
from llmfleet.services import EdgePorts, MonitorPorts

STATE_FILE = "state.json"
Say = Callable[[str], None]


class SandboxError(LlmfleetError):
    """The sandbox could not do what was asked; the message says why and what to do."""


@dataclass
class SandboxState:
    """Everything a running sandbox is, as saved in its state directory."""

    stack: str
    endpoint: str
    edge_ports: EdgePorts
    nginx_conf: str
    members_file: str  # the backends, as the sync agent reads them
    sync_state_file: str  # each backend's state, as the sync agent last saw it
    config_file: str
    monitor_ports: MonitorPorts | None = None
    scrape_targets_file: str | None = None  # the backends Prometheus scrapes
    autoscaler_file: str | None = None  # the autoscaler's last decision, when it runs
    redis_url: str | None = None
    redis_password_file: str | None = None
    ca_file: str | None = None  # with `up --tls`: the sandbox's CA, which signed the edge's
    supervised: bool = False  # the supervisor starts every process, and again when it ends
    autoscale: bool = False  # the autoscaler replaces backends; the supervisor does not
    processes: list[ProcessRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxState:
        monitor = data.get("monitor_ports")
        return cls(**{
            **data,
            "edge_ports": EdgePorts(**data["edge_ports"]),
            "monitor_ports": MonitorPorts(**monitor) if monitor else None,
            "processes": [ProcessRecord.from_dict(p) for p in data.get("processes", [])],
        })

    def save(self, state_dir: Path) -> None:
        tmp = state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, state_dir / STATE_FILE)  # atomic: a crash never leaves half a file

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)


def load_state(state_dir: Path) -> SandboxState | None:
    """The sandbox recorded in `state_dir`, or None when there is none. The supervisor's
    records (the process it started last under each name, its restarts and last exit) are
    laid over `up`'s."""
    try:
        state = SandboxState.from_dict(json.loads((state_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise SandboxError(_not_a_directory(state_dir)) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SandboxError(f"cannot read {state_dir / STATE_FILE}: {error}; if no sandbox "
                           f"runs, remove the file") from None
    supervised = read_supervision(state_dir)
    for record in state.processes:
        latest = supervised.get(record.name)
        if latest and latest.get("pid"):
            record.pid, record.start_ticks = latest["pid"], latest["start_ticks"]
            record.restarts, record.last_exit = latest["restarts"], latest["last_exit"]
    return state


def _not_a_directory(state_dir: Path) -> str:
    if state_dir.exists():
        return (f"the state directory {state_dir} is not a directory; name another with "
                "--state-dir")
    blocker = next((p for p in state_dir.parents if p.exists()), state_dir)
    return (f"cannot use {state_dir} as the state directory: {blocker} is a file; name "
            "another with --state-dir")


@dataclass
class SandboxRun:
    """What `up` has done so far: ports taken, processes started, all saved as they happen."""

    config: FleetConfig
    state_dir: Path
    say: Say
    taken_ports: set[int] = field(default_factory=set)
    state: SandboxState | None = None

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def port(self, preferred: int, *, explicit: bool = False) -> int:
        """`preferred` when free on loopback, else any free port; an explicit port must be free."""
        if explicit and (preferred in self.taken_ports or not port_is_free(preferred)):
            raise SandboxError(f"port {preferred} on {LOOPBACK} is in use; choose another")
        chosen = pick_ports(preferred, 1, taken=self.taken_ports)[0]
        self.taken_ports.add(chosen)
        return chosen

    def launch(self, name: str, kind: str, command: list[str] | tuple[str, ...], url: str,
               health_url: str | None) -> ProcessRecord:
        """Start one process, its output in logs/<name>.log, and record it at once."""
        assert self.state is not None, "record the sandbox's state before launching"
        log = self.logs / f"{name}.log"
        if self.state.supervised and kind != SUPERVISOR:
            record = self._launch_supervised(name, kind, list(command), log, url,
                                             health_url or "")
        else:
            try:
                record = launch(name, kind, list(command), log, url, health_url or "")
            except ExitedAtOnce as error:
                raise SandboxError(exited_during_start_up(name, str(error.log))) from None
        self.state.processes.append(record)
        self.save()
        return record

    def _launch_supervised(self, name: str, kind: str, command: list[str], log: Path,
                           url: str, health_url: str) -> ProcessRecord:
        """Started by the supervisor, as its child: started again whenever it ends (backends
        the autoscaler manages excepted)."""
        assert self.state is not None
        restart = not (kind == "backend" and self.state.autoscale)
        try:
            started = ask(self.state_dir, {"op": "start", "name": name, "command": command,
                                           "log": str(log), "restart": restart})
        except SupervisorError as error:
            if error.exited:
                raise SandboxError(exited_during_start_up(name, str(log))) from None
            raise SandboxError(str(error)) from None
        return ProcessRecord(name, kind, started["pid"], started["start_ticks"], command,
                             str(log), url, health_url)

    def wait_healthy(self, records: list[ProcessRecord], timeout_s: float | None = None) -> None:
        """Wait until every one of `records` answers its health check."""
        timeout_s = timeout_s or self.config.sandbox.health_timeout_s
        pending = {r.name: r for r in records}
        started = time.monotonic()

        def all_healthy() -> bool:
            for name, record in list(pending.items()):
                if not is_running(record):
                    raise SandboxError(exited_during_start_up(name, record.log))
                if not record.health_url or answers(record.health_url, timeout_s=0.5):
                    del pending[name]
            return not pending

        if not wait_until(all_healthy, timeout_s):
            raise SandboxError(
                f"not healthy after {timeout_s:.0f} s: {', '.join(pending)}; logs: "
                + ", ".join(r.log for r in pending.values())
            )
        names = ", ".join(r.name for r in records)
        self.say(f"healthy in {time.monotonic() - started:.1f} s: {names}")

    def save(self) -> None:
        assert self.state is not None
        self.state.save(self.state_dir)


def exited_during_start_up(name: str, log: str) -> str:
    """One line: the process, the last thing its log says (its own reason, as a rule), and
    where the rest is."""
    return f"{name} exited during start-up: {last_line(log)} (its log: {log})"


def last_line(path: str, limit: int = 300) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    said = [line for line in lines if line]
    return said[-1][:limit] if said else "(its log is empty)"
