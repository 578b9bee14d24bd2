"""What a sandbox runs and how each part is doing, as typed records (`llmfleet status`).

A backend's `state` is the edge's own view, from the sync agent's last pass: `booting` (not
yet answering /health, so no traffic), `ready`, `draining` (finishing, nothing new), `down`.
With `up --autoscale`, the autoscaler's entry also says its policy, the size it wants and its
last decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmfleet.edge.members import read_members_file
from llmfleet.edge.sync import MemberState, read_state
from llmfleet.local.sandbox.autoscaling import PROCESS as AUTOSCALER
from llmfleet.local.sandbox.autoscaling import AutoscalerReport, read_report
from llmfleet.local.sandbox.health import answers
from llmfleet.local.sandbox.processes import ProcessRecord, is_running
from llmfleet.local.sandbox.run import SandboxState


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    kind: str
    url: str
    pid: int
    running: bool
    healthy: bool
    log: str
    restarts: int  # times the supervisor started it again
    last_exit: str | None  # how it last ended ("killed by SIGKILL", "exit code 1")


@dataclass(frozen=True)
class BackendStatus(ProcessStatus):
    state: MemberState


@dataclass(frozen=True)
class SandboxStatus:
    running: bool
    state_dir: str
    stack: str | None = None
    endpoint: str | None = None
    nginx_conf: str | None = None
    ca_file: str | None = None  # with `up --tls`: the CA a client trusts the edge by
    backends: tuple[BackendStatus, ...] = ()
    # Every other process by its service name: nginx, redis, gateway, sync, prometheus, ...
    services: dict[str, ProcessStatus] = field(default_factory=dict)
    autoscaler: AutoscalerReport | None = None  # its last report, when it runs

    def service(self, name: str) -> ProcessStatus | None:
        return self.services.get(name)

    @property
    def prometheus_url(self) -> str | None:
        """The sandbox's Prometheus when it runs (`top` and `load --plot` read it)."""
        prometheus = self.service("prometheus")
        return prometheus.url if prometheus and prometheus.running else None

    def to_json(self) -> dict[str, Any]:
        """`status --json`: the endpoint, the backends, then each service under its name (the
        autoscaler's with its policy, desired size and last decision)."""
        services = {name: asdict(s) for name, s in self.services.items()}
        if self.autoscaler is not None:
            services[AUTOSCALER] = {**services.get(AUTOSCALER, {}),
                                    **self.autoscaler.to_json()}
        return {
            "running": self.running,
            "stack": self.stack,
            "state_dir": self.state_dir,
            "endpoint": self.endpoint,
            "nginx_conf": self.nginx_conf,
            "ca_file": self.ca_file,
            "backends": [{**asdict(b), "state": b.state.value} for b in self.backends],
            **services,
        }


def describe(state: SandboxState, state_dir: Path) -> SandboxStatus:
    """Probe every recorded process and combine it with the sync agent's view."""
    seen = read_state(Path(state.sync_state_file))
    draining = {m.name for m in read_members_file(Path(state.members_file)) if m.draining}
    backends, services = [], {}
    for record in state.processes:
        process = _probe(record)
        if record.kind == "backend":
            backends.append(BackendStatus(**asdict(process),
                                          state=_backend_state(process, seen, draining)))
        else:
            services[record.name] = process
    return SandboxStatus(
        running=any(p.running for p in [*backends, *services.values()]),
        state_dir=str(state_dir),
        stack=state.stack,
        endpoint=state.endpoint,
        nginx_conf=state.nginx_conf,
        ca_file=state.ca_file,
        backends=tuple(backends),
        services=services,
        autoscaler=read_report(Path(state.autoscaler_file)) if state.autoscaler_file else None,
    )


def _probe(record: ProcessRecord) -> ProcessStatus:
    running = is_running(record)
    return ProcessStatus(
        name=record.name, kind=record.kind, url=record.url, pid=record.pid, running=running,
        healthy=running and (not record.health_url or answers(record.health_url)),
        log=record.log, restarts=record.restarts, last_exit=record.last_exit)


def _backend_state(process: ProcessStatus, seen: dict[str, MemberState],
                   draining: set[str]) -> MemberState:
    """The sync agent's view where it has one (it may be a pass behind a process that just
    died); before its first pass, what a probe shows."""
    if not process.running:
        return MemberState.DOWN
    if process.name in seen:
        return seen[process.name]
    if process.name in draining:
        return MemberState.DRAINING
    if process.healthy:
        return MemberState.READY
    return MemberState.BOOTING
