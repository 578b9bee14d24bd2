"""Bring the sandbox up, report on it, and take it down again.

Everything `up` starts is written to the state file as soon as it is started, so `down` can
stop exactly that (and nothing else) even after `up` itself crashed half way. `up` starts the
supervisor first (`supervisor.py`), which starts every other process and starts it again when
it ends, as systemd does on the edge. With `--autoscale` the autoscaler adds backends to those
records and takes drained ones out. `down` stops the supervisor first (nothing is started
again from then on), then the autoscaler, so the records it then reads are final.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from llmfleet.config import FleetConfig
from llmfleet.local.sandbox.autoscaling import PROCESS as AUTOSCALER
from llmfleet.local.sandbox.autoscaling import aws_paced_notes, policy_config, start_autoscaler
from llmfleet.local.sandbox.certificates import issue_edge_certificate
from llmfleet.local.sandbox.components import claim_edge_ports, start_backends, start_edge
from llmfleet.local.sandbox.monitoring import start_monitoring
from llmfleet.local.sandbox.ports import LOOPBACK
from llmfleet.local.sandbox.processes import ProcessRecord, is_running, stop
from llmfleet.local.sandbox.run import (
    STATE_FILE,
    SandboxError,
    SandboxRun,
    SandboxState,
    Say,
    load_state,
)
from llmfleet.local.sandbox.status import SandboxStatus, describe
from llmfleet.local.sandbox.supervisor import FILE as SUPERVISION_FILE
from llmfleet.local.sandbox.supervisor import PROCESS as SUPERVISOR
from llmfleet.local.sandbox.supervisor import read_supervision
from llmfleet.paths import repo_root
from llmfleet.services import EDGE_HOST_SYSCTLS, REDIS_PASSWORD, SANDBOX_TLS_DIR, Placement


def default_state_dir() -> Path:
    """Where `up` keeps pid records, rendered config and logs (overridable for tests)."""
    configured = os.environ.get("LLMFLEET_STATE_DIR")
    return Path(configured) if configured else repo_root() / ".llmfleet" / "sandbox"


def up(config: FleetConfig, state_dir: Path, *, edge_port_explicit: bool = False,
       autoscale: bool = False, max_backends: int | None = None, supervise: bool = True,
       keep_keys: bool = True, tls: bool = False, say: Say = lambda _: None) -> SandboxStatus:
    """Start every component; return once all answer their health checks. With `autoscale`,
    the autoscaler (from `config.autoscaling`, up to `max_backends`, default
    `fleet.max_size`) starts last. With `supervise` (the default) a process that ends is
    started again; with `keep_keys` (the default) Redis keeps its data in the state directory
    (AOF, as on the edge), so API keys outlive a restart of Redis and `down`/`up`; without,
    every `up` starts with no keys and a restarted Redis has none. With `tls` the edge serves
    HTTPS with a certificate from the sandbox's own CA (its file is in the status), and plain
    HTTP redirects to it."""
    state_dir = state_dir.resolve()
    _warn_if_the_kernel_caps_bursts(say)
    if autoscale:
        if not config.sandbox.monitoring:
            raise SandboxError("--autoscale reads the fleet's queue from Prometheus; turn "
                               "sandbox.monitoring on")
        policy_config(config, max_backends)  # bad bounds fail before anything starts
        for note in aws_paced_notes(config):
            say(note)
    elif max_backends is not None:
        raise SandboxError("--max-backends bounds the autoscaler; add --autoscale")
    _refuse_if_running(state_dir)
    try:
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SandboxError(f"cannot make the state directory {state_dir}: {error.strerror}; "
                           "name another with --state-dir") from None
    run = SandboxRun(config, state_dir, say)
    try:
        ports = claim_edge_ports(run, edge_port_explicit=edge_port_explicit, tls=tls)
        place = Placement.for_sandbox(config, state_dir, ports)
        issued = (issue_edge_certificate(state_dir / SANDBOX_TLS_DIR,
                                         Path(place.tls.certificate), Path(place.tls.key))
                  if place.tls else None)
        _forget_previous_run(place, state_dir, keep_keys)
        run.state = SandboxState(
            stack=config.stack_name,
            endpoint=(f"https://{LOOPBACK}:{ports.https}" if place.tls
                      else f"http://{LOOPBACK}:{ports.http}"),
            edge_ports=ports,
            nginx_conf=place.nginx_conf,
            members_file=place.members.path,
            sync_state_file=place.sync_state_file,
            config_file=place.config_file,
            redis_url=place.redis_url if place.auth else None,
            redis_password_file=place.secret_source(REDIS_PASSWORD) if place.auth else None,
            supervised=supervise,
            autoscale=autoscale,
            ca_file=str(issued.ca_file) if issued else None,
        )
        run.save()
        if supervise:
            _start_supervisor(run)
        backends = start_backends(run)
        start_edge(run, place, backends, keep_keys=keep_keys)
        if config.sandbox.monitoring:
            run.state.monitor_ports = start_monitoring(run, place, backends)
            run.save()
        if autoscale:
            start_autoscaler(run, max_backends)
    except BaseException:
        down(state_dir)
        raise
    return status(state_dir)


def down(state_dir: Path, *, say: Say = lambda _: None) -> int:
    """Stop everything `up` recorded; safe to run twice and after a crash. Returns how many
    processes were still running."""
    state_dir = state_dir.resolve()
    state = load_state(state_dir)
    if state is None:
        return 0
    stopped = 0
    # The supervisor first: until it is gone it starts again whatever ends. Then the
    # autoscaler: until it is gone it may start or stop backends.
    for kind in (SUPERVISOR, AUTOSCALER):
        for record in (load_state(state_dir) or state).processes:
            if record.kind == kind and stop(record):
                stopped += 1
                say(f"stopped {record.name} (pid {record.pid})")
    state = load_state(state_dir) or state
    # Reverse start order, the backends last (the autoscaler records the ones it adds after
    # the edge): the edge goes first, so no new request reaches a stopping backend.
    rest = [r for r in reversed(state.processes) if r.kind not in (SUPERVISOR, AUTOSCALER)]
    for record in [*sorted(rest, key=lambda r: r.kind == "backend"),
                   *_unrecorded(state, state_dir)]:
        if stop(record):
            stopped += 1
            say(f"stopped {record.name} (pid {record.pid})")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    (state_dir / SUPERVISION_FILE).unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> SandboxStatus:
    """What runs and whether it answers; `running` is False when nothing is up."""
    state_dir = state_dir.resolve()
    state = load_state(state_dir)
    if state is None:
        return SandboxStatus(running=False, state_dir=str(state_dir))
    return describe(state, state_dir)


def _start_supervisor(run: SandboxRun) -> None:
    """The supervisor, before anything else: it starts every other process."""
    command = [sys.executable, "-m", "llmfleet.local.sandbox.supervise",
               "--state-dir", str(run.state_dir)]
    health = f"file://{run.state_dir / SUPERVISION_FILE}"  # written once it listens
    run.wait_healthy([run.launch(SUPERVISOR, SUPERVISOR, command, "", health)])


def _unrecorded(state: SandboxState, state_dir: Path) -> list[ProcessRecord]:
    """Processes the supervisor started that the records no longer list (a backend the
    autoscaler was taking out when it stopped): `down` stops them too."""
    listed = {r.name for r in state.processes}
    return [ProcessRecord(name, "backend", entry["pid"], entry["start_ticks"],
                          entry["command"], entry["log"], "", "")
            for name, entry in read_supervision(state_dir).items()
            if name not in listed and entry.get("pid")]


def _warn_if_the_kernel_caps_bursts(say: Say) -> None:
    """The AWS edge raises net.core.somaxconn to the edge's listen backlog; here it is the
    machine's setting, which silently caps every accept queue the sandbox asks for."""
    wanted = int(EDGE_HOST_SYSCTLS["net.core.somaxconn"])
    try:
        have = int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return
    if have < wanted:
        say(f"note: net.core.somaxconn is {have} here (the AWS edge sets {wanted}); a burst of "
            f"more than {have} clients connecting at once waits for SYN retransmits. To match "
            f"the edge: sudo sysctl -w net.core.somaxconn={wanted}")


def _refuse_if_running(state_dir: Path) -> None:
    state = load_state(state_dir)
    if state is None:
        return
    if any(is_running(r) for r in state.processes):
        raise SandboxError(
            f"a sandbox is already running at {state.endpoint} (state in {state_dir}); "
            "run `llmfleet down` first"
        )
    down(state_dir)  # stale records from a crash: nothing to stop, just forget them


def _forget_previous_run(place: Placement, state_dir: Path, keep_keys: bool) -> None:
    """Files an earlier run left that would mislead this one: the sync agent's last view
    (its appearance is the agent's health check), nginx's pid (a reload would signal it), the
    supervisor's records (its health check too); and, without `keep_keys`, Redis's data."""
    for leftover in (place.sync_state_file, place.nginx.pid, state_dir / SUPERVISION_FILE):
        Path(leftover).unlink(missing_ok=True)
    if not keep_keys:
        shutil.rmtree(Path(place.redis_dir) / "appendonlydir", ignore_errors=True)
        (Path(place.redis_dir) / "dump.rdb").unlink(missing_ok=True)
