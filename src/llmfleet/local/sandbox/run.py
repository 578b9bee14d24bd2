"""One `up` in progress: the ports it has taken, the processes it has started, the facts
later components need (the Redis URL, the gateway address, ...), all saved as they happen."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.local.sandbox.health import http_ok
from llmfleet.local.sandbox.ports import LOOPBACK, pick_ports, port_is_free
from llmfleet.local.sandbox.processes import (
    ExitedAtOnce,
    ProcessRecord,
    is_running,
    launch,
    wait_until,
)

STATE_FILE = "state.json"
Say = Callable[[str], None]


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked; the message says why and what to do."""


@dataclass
class SandboxRun:
    """What `up` has done so far. Components call `port`, `launch` and `wait_healthy`."""

    config: FleetConfig
    state_dir: Path
    say: Say
    state: dict[str, Any] = field(default_factory=dict)
    taken_ports: set[int] = field(default_factory=set)
    _pending: list[ProcessRecord] = field(default_factory=list)

    @property
    def facts(self) -> dict[str, Any]:
        """Values components publish for each other and for `status` (saved with the state)."""
        return self.state.setdefault("facts", {})

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

    def launch(self, name: str, kind: str, command: list[str], url: str, health_url: str,
               env: dict[str, str] | None = None) -> ProcessRecord:
        """Start one process, its output in logs/<name>.log, and record it at once."""
        try:
            record = launch(name, kind, command, self.logs / f"{name}.log", url, health_url, env)
        except ExitedAtOnce as error:
            raise SandboxError(f"{name} exited during start-up:\n{_tail(str(error.log))}") from None
        self.state.setdefault("processes", []).append(record.to_dict())
        self._pending.append(record)
        self.save()
        return record

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Wait until everything launched since the last call answers its health check."""
        timeout_s = timeout_s or self.config.sandbox.health_timeout_s
        pending = {r.name: r for r in self._pending}
        started = time.monotonic()

        def all_healthy() -> bool:
            for name, record in list(pending.items()):
                if not is_running(record):
                    raise SandboxError(f"{name} exited during start-up:\n{_tail(record.log)}")
                if http_ok(record.health_url, timeout_s=0.5):
                    del pending[name]
            return not pending

        if not wait_until(all_healthy, timeout_s):
            raise SandboxError(
                f"not healthy after {timeout_s:.0f} s: {', '.join(pending)}; logs: "
                + ", ".join(r.log for r in pending.values())
            )
        names = ", ".join(r.name for r in self._pending)
        self.say(f"healthy in {time.monotonic() - started:.1f} s: {names}")
        self._pending.clear()

    def save(self) -> None:
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_dir / STATE_FILE)  # atomic: a crash never leaves half a file


def load_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise SandboxError(f"cannot read {state_dir / STATE_FILE}: {error}") from None


def records(state: dict[str, Any]) -> list[ProcessRecord]:
    return [ProcessRecord.from_dict(p) for p in state.get("processes", [])]


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
