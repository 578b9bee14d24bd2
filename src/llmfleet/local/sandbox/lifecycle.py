"""Bring the sandbox up, report on it, and take it down again.

Everything `up` starts is written to the state file as soon as it is started, so `down` can
stop exactly that (and nothing else) even after `up` itself crashed half way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmfleet.config import FleetConfig
from llmfleet.local.sandbox.components import STARTERS
from llmfleet.local.sandbox.health import http_ok
from llmfleet.local.sandbox.ports import LOOPBACK
from llmfleet.local.sandbox.processes import ProcessRecord, is_running, stop
from llmfleet.local.sandbox.run import (
    STATE_FILE,
    SandboxError,
    SandboxRun,
    Say,
    load_state,
    records,
)
from llmfleet.paths import repo_root


def default_state_dir() -> Path:
    """Where `up` keeps pid records, rendered config and logs (overridable for tests)."""
    configured = os.environ.get("LLMFLEET_STATE_DIR")
    return Path(configured) if configured else repo_root() / ".llmfleet" / "sandbox"


def up(config: FleetConfig, state_dir: Path, *, edge_port_explicit: bool = False,
       say: Say = lambda _: None) -> dict[str, Any]:
    """Start every component; return once all answer their health checks."""
    state_dir = state_dir.resolve()
    _refuse_if_running(state_dir)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    run = SandboxRun(config, state_dir, say, state={"stack": config.stack_name})
    try:
        # The edge port is claimed first: it is the one a user asked for by number.
        edge_port = run.port(config.sandbox.edge_port, explicit=edge_port_explicit)
        run.facts["edge_port"] = edge_port
        run.state["endpoint"] = f"http://{LOOPBACK}:{edge_port}"
        run.save()
        for start in STARTERS:
            start(run)
            run.wait_healthy()
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
    # Reverse start order: the edge goes first, so no new request reaches a stopping backend.
    for record in reversed(records(state)):
        if stop(record):
            stopped += 1
            say(f"stopped {record.name} (pid {record.pid})")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    """What runs and whether it answers; `{"running": False, ...}` when nothing is up.

    Backends are listed under "backends"; every other component under its kind ("edge", and
    later "redis", "gateway", ...).
    """
    state_dir = state_dir.resolve()
    state = load_state(state_dir)
    if state is None:
        return {"running": False, "state_dir": str(state_dir), "endpoint": None, "backends": []}
    components = [_describe(record) for record in records(state)]
    report: dict[str, Any] = {
        "running": any(c["running"] for c in components),
        "stack": state["stack"],
        "state_dir": str(state_dir),
        "endpoint": state.get("endpoint"),
        "nginx_conf": state.get("nginx_conf"),
        "facts": state.get("facts", {}),
        "backends": [c for c in components if c["kind"] == "backend"],
    }
    for component in components:
        if component["kind"] != "backend":
            report[component["kind"]] = component
    report.setdefault("edge", None)
    return report


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
    state = load_state(state_dir)
    if state is None:
        return
    if any(is_running(r) for r in records(state)):
        raise SandboxError(
            f"a sandbox is already running at {state.get('endpoint')} (state in {state_dir}); "
            "run `llmfleet down` first"
        )
    down(state_dir)  # stale records from a crash: nothing to stop, just forget them
