"""The sandbox's backends as the autoscaler sees and changes them.

A backend it adds is launched (a simulated one listens only after `sandbox.boot_delay_s`, a
GPU node's cold start), recorded in the sandbox's state, and listed in the members file (the
sync agent lets it in once its /health answers) and in Prometheus' targets file.

A backend it takes out drains first: it is marked draining in the members file; once two
passes of the sync agent have seen that (the second one read the file after the mark, and
reloaded nginx with the backend `down`), nothing new reaches it; once its /metrics has shown
nothing running or waiting for a moment, it is stopped, and it leaves the members file, the
targets file and the records. No request it serves is cut.
"""

from __future__ import annotations

import http.client
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from llmfleet.autoscale.policy import Group, Node, NodeState
from llmfleet.config import FleetConfig
from llmfleet.edge.members import Member, read_members_file, write_members_file
from llmfleet.edge.sync import MemberState, read_state
from llmfleet.local.sandbox.backends import backend_command, backend_name
from llmfleet.local.sandbox.monitoring import write_backend_targets
from llmfleet.local.sandbox.ports import LOOPBACK
from llmfleet.local.sandbox.processes import ProcessRecord, is_running, stop
from llmfleet.local.sandbox.run import SandboxError, SandboxRun, SandboxState, Say, load_state

# Idle this long before the stop: a request an old nginx worker sent on just as it reloaded
# has arrived and shows in /metrics by then.
SETTLE_S = 1.0
# vLLM's gauges of what a server has: a drained backend has none of either.
LOAD_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting")
PROBE_TIMEOUT_S = 2.0


@dataclass
class _Drain:
    marked_at: float  # when the members file said draining (seconds since the epoch)
    passes: set[float] = field(default_factory=set)  # sync passes since then that saw it out
    idle_since: float | None = None  # monotonic


class SandboxFleet:
    """The running sandbox's backends: which there are, in what state; add and drain them."""

    def __init__(self, config: FleetConfig, state_dir: Path, say: Say) -> None:
        state = load_state(state_dir)
        if state is None:
            raise SandboxError(f"no sandbox is recorded in {state_dir}")
        self.config = config
        self.run = SandboxRun(config, state_dir, say, taken_ports=_ports_in_use(state),
                              state=state)
        self.say = say
        self._next_index = 1 + max((_index(r.name) for r in self.backends()), default=-1)
        self._drains: dict[str, _Drain] = {}

    @property
    def state(self) -> SandboxState:
        assert self.run.state is not None
        return self.run.state

    def backends(self) -> list[ProcessRecord]:
        return [r for r in self.state.processes if r.kind == "backend"]

    def nodes(self) -> list[Node]:
        """Every running backend in the members file, in the policy's terms, from the edge's
        own view: ready once the sync agent has let it in."""
        seen = read_state(Path(self.state.sync_state_file))
        members = {m.name: m for m in self._members()}
        nodes = []
        for record in self.backends():
            member = members.get(record.name)
            if member is None or not is_running(record):
                continue
            if member.draining:
                state = NodeState.DRAINING
            elif seen.get(record.name) is MemberState.READY:
                state = NodeState.READY
            else:
                # Not answering yet, or answering no more while its process runs: either way
                # capacity on the way, not capacity now.
                state = NodeState.BOOTING
            nodes.append(Node(record.name, Group.SPOT, state, since_s=_age_s(record)))
        return nodes

    def resize(self, target: int, drain: Sequence[str], nodes: Sequence[Node]) -> None:
        """Make `target` backends serve or boot: drain the ones the policy named (and, if that
        is not enough, booting ones first, then the least busy), or add new ones."""
        live = [n for n in nodes if n.state is not NodeState.DRAINING]
        names = {n.name for n in live}
        victims = [name for name in drain if name in names]
        surplus = len(live) - len(victims) - target
        if surplus > 0:
            others = sorted((n for n in live if n.name not in victims),
                            key=lambda n: (n.state is NodeState.READY, n.running))
            victims += [n.name for n in others[:surplus]]
        for name in victims:
            self._start_drain(name)
        for _ in range(target - (len(live) - len(victims))):
            self._add()

    def advance(self) -> None:
        """Move every drain on a step (stop the backends that have finished), and take out
        backends whose process has exited, so a new one replaces them."""
        sync_file = Path(self.state.sync_state_file)
        seen = read_state(sync_file)
        try:
            pass_time = sync_file.stat().st_mtime  # the file is rewritten by every pass
        except FileNotFoundError:
            pass_time = 0.0
        for name, drain in list(self._drains.items()):
            record = self.state.process(name)
            if record is None or not is_running(record):
                self._remove(name, "exited while draining")
                continue
            if pass_time > drain.marked_at and seen.get(name) is not MemberState.READY:
                drain.passes.add(pass_time)
            if len(drain.passes) < 2:
                continue
            if _load(record.url) > 0:
                drain.idle_since = None
                continue
            now = time.monotonic()
            if drain.idle_since is None:
                drain.idle_since = now
            elif now - drain.idle_since >= SETTLE_S:
                stop(record)
                self._remove(name, "drained and stopped")
        for record in self.backends():
            if record.name not in self._drains and not is_running(record):
                self._remove(record.name, f"exited (its log: {record.log}); replacing it")

    def _add(self) -> None:
        sandbox = self.config.sandbox
        index = self._next_index
        self._next_index += 1
        name = backend_name(index)
        port = self.run.port(sandbox.base_port + index)
        url = f"http://{LOOPBACK}:{port}"
        command = backend_command(self.config, index, port, startup_delay_s=sandbox.boot_delay_s)
        self.run.launch(name, "backend", command, url, url + "/health")
        self._write_members([*self._members(), Member(name=name, host=LOOPBACK, port=port)])
        self.say(f"started {name} on {url}")

    def _start_drain(self, name: str) -> None:
        self._write_members([replace(m, draining=True) if m.name == name else m
                             for m in self._members()])
        self._drains[name] = _Drain(marked_at=time.time())
        self.say(f"draining {name}")

    def _remove(self, name: str, why: str) -> None:
        self._drains.pop(name, None)
        self._write_members([m for m in self._members() if m.name != name])
        self.state.processes = [p for p in self.state.processes if p.name != name]
        self.run.save()
        self.say(f"{name} {why}")

    def _members(self) -> list[Member]:
        return read_members_file(Path(self.state.members_file))

    def _write_members(self, members: list[Member]) -> None:
        write_members_file(Path(self.state.members_file), members)
        if self.state.scrape_targets_file:
            write_backend_targets(Path(self.state.scrape_targets_file), members)


def _load(url: str) -> float:
    """Requests a backend runs or queues, from its /metrics: 0 when nothing listens (it never
    did, or has stopped), infinite when it does not answer in time (busy, not idle)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port,
                                            timeout=PROBE_TIMEOUT_S)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        text = response.read().decode()
    except ConnectionRefusedError:
        return 0.0
    except (OSError, http.client.HTTPException):
        return math.inf
    finally:
        connection.close()
    if response.status != 200:
        return math.inf
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name in LOAD_METRICS for sample in family.samples)


def _age_s(record: ProcessRecord) -> float:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return max(0.0, uptime - record.start_ticks / os.sysconf("SC_CLK_TCK"))


def _index(name: str) -> int:
    """backend-3 → 2: the 0-based index `backend_name` made the name from."""
    return int(name.rsplit("-", 1)[1]) - 1


def _ports_in_use(state: SandboxState) -> set[int]:
    """Every port the sandbox holds, also a booting backend's that nothing listens on yet."""
    ports = [*asdict(state.edge_ports).values(),
             *(asdict(state.monitor_ports).values() if state.monitor_ports else ()),
             *(urlsplit(r.url).port for r in state.processes)]
    return {p for p in ports if p}
