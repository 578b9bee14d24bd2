"""Bring the sandbox up, report on it, and take it down again.

Everything `up` starts is written to the state file as soon as it is started, so `down` can
stop exactly that (and nothing else) even after `up` itself crashed half way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.edge.nginx import (
    NginxPaths,
    Upstream,
    check_nginx_conf,
    nginx_binary,
    render_nginx_conf,
)
from llmfleet.paths import repo_root
from llmfleet.sandbox.backends import backend_command, backend_name
from llmfleet.sandbox.health import http_ok
from llmfleet.sandbox.ports import LOOPBACK, pick_ports, port_is_free
from llmfleet.sandbox.processes import ProcessRecord, is_running, launch, stop, wait_until

STATE_FILE = "state.json"
Say = Callable[[str], None]


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked; the message says why and what to do."""


def default_state_dir() -> Path:
    """Where `up` keeps pid records, rendered config and logs (overridable for tests)."""
    configured = os.environ.get("LLMFLEET_STATE_DIR")
    return Path(configured) if configured else repo_root() / ".llmfleet" / "sandbox"


def up(config: FleetConfig, state_dir: Path, *, edge_port_explicit: bool = False,
       say: Say = lambda _: None) -> dict[str, Any]:
    """Start the backends and the nginx edge; return once all answer their health checks."""
    state_dir = state_dir.resolve()
    _refuse_if_running(state_dir)
    sandbox = config.sandbox
    edge_port = _edge_port(sandbox.edge_port, edge_port_explicit)
    backend_ports = pick_ports(sandbox.base_port, sandbox.backends, taken={edge_port})
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "stack": config.stack_name,
        "endpoint": f"http://{LOOPBACK}:{edge_port}",
        "nginx_conf": str(state_dir / "nginx" / "nginx.conf"),
        "processes": [],
    }
    try:
        for index, port in enumerate(backend_ports):
            name = backend_name(index)
            url = f"http://{LOOPBACK}:{port}"
            say(f"starting {name} ({sandbox.backend.value}) on {url}")
            record = launch(name, "backend", backend_command(config, index, port),
                            state_dir / "logs" / f"{name}.log", url, url + "/health")
            _remember(state_dir, state, record)
        upstreams = [Upstream(backend_name(i), LOOPBACK, port)
                     for i, port in enumerate(backend_ports)]
        conf = _write_nginx_conf(config, upstreams, state_dir, edge_port)
        say(f"starting nginx (edge, {config.load_balancing.strategy.value}) on "
            f"{state['endpoint']}")
        edge = launch("edge", "edge",
                      [nginx_binary(), "-c", str(conf), "-e", str(conf.parent / "error.log"),
                       "-g", "daemon off;"],
                      state_dir / "logs" / "nginx.log", state["endpoint"],
                      state["endpoint"] + "/health")
        _remember(state_dir, state, edge)
        _wait_healthy(state, sandbox.health_timeout_s, say)
    except BaseException:
        down(state_dir)
        raise
    return status(state_dir)


def down(state_dir: Path, *, say: Say = lambda _: None) -> int:
    """Stop everything `up` recorded; safe to run twice and after a crash. Returns how many
    processes were still running."""
    state_dir = state_dir.resolve()
    state = _load(state_dir)
    if state is None:
        return 0
    stopped = 0
    # The edge first, so no new request reaches a backend that is about to stop.
    for record in sorted(_records(state), key=lambda r: r.kind != "edge"):
        if stop(record):
            stopped += 1
            say(f"stopped {record.name} (pid {record.pid})")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    """What runs and whether it answers; `{"running": False}` when nothing is up."""
    state_dir = state_dir.resolve()
    state = _load(state_dir)
    if state is None:
        return {"running": False, "state_dir": str(state_dir), "endpoint": None, "backends": []}
    components = [_describe(record) for record in _records(state)]
    edge = next((c for c in components if c["kind"] == "edge"), None)
    return {
        "running": any(c["running"] for c in components),
        "stack": state["stack"],
        "state_dir": str(state_dir),
        "endpoint": state["endpoint"],
        "nginx_conf": state["nginx_conf"],
        "edge": edge,
        "backends": [c for c in components if c["kind"] == "backend"],
    }


def _describe(record: ProcessRecord) -> dict[str, Any]:
    running = is_running(record)
    return {
        "name": record.name,
        "kind": record.kind,
        "url": record.url,
        "pid": record.pid,
        "running": running,
        "healthy": running and http_ok(record.health_url),
        "log": record.log,
    }


def _refuse_if_running(state_dir: Path) -> None:
    state = _load(state_dir)
    if state is None:
        return
    if any(is_running(r) for r in _records(state)):
        raise SandboxError(
            f"a sandbox is already running at {state['endpoint']} (state in {state_dir}); "
            "run `llmfleet down` first"
        )
    down(state_dir)  # stale records from a crash: nothing to stop, just forget them


def _edge_port(preferred: int, explicit: bool) -> int:
    if port_is_free(preferred):
        return preferred
    if explicit:
        raise SandboxError(f"port {preferred} on {LOOPBACK} is in use; choose another --port")
    return pick_ports(preferred, 1)[0]


def _write_nginx_conf(config: FleetConfig, upstreams: list[Upstream], state_dir: Path,
                      edge_port: int) -> Path:
    nginx_dir = state_dir / "nginx"
    paths = NginxPaths.under(nginx_dir)
    paths.make_dirs()
    # The sandbox shows which backend served each response (the load report counts them).
    config = config.model_copy(update={
        "load_balancing": config.load_balancing.model_copy(update={"expose_upstream_header": True})
    })
    conf = nginx_dir / "nginx.conf"
    conf.write_text(render_nginx_conf(config, upstreams, listen=f"{LOOPBACK}:{edge_port}",
                                      paths=paths))
    check = check_nginx_conf(conf)
    if not check.ok:
        raise SandboxError(f"nginx rejected the rendered config {conf}:\n{check.output}")
    return conf


def _wait_healthy(state: dict[str, Any], timeout_s: float, say: Say) -> None:
    records = _records(state)
    pending = {r.name: r for r in records}
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
    say(f"all {len(records)} processes healthy in {time.monotonic() - started:.1f} s")


def _remember(state_dir: Path, state: dict[str, Any], record: ProcessRecord) -> None:
    state["processes"].append(record.to_dict())
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_dir / STATE_FILE)  # atomic: a crash never leaves half a file


def _load(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise SandboxError(f"cannot read {state_dir / STATE_FILE}: {error}") from None


def _records(state: dict[str, Any]) -> list[ProcessRecord]:
    return [ProcessRecord.from_dict(p) for p in state["processes"]]


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
