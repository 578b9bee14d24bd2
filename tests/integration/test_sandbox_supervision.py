"""`up` supervises what it starts, as systemd does on the edge: a killed service is started
again (status counts it and says how it ended), keys outlive a restart of Redis and
`down`/`up`, and `down` stops the supervision before anything else."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from llmfleet.config import load_config
from llmfleet.local.sandbox import down, status, up
from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.local.sandbox.supervisor import FILE

pytestmark = pytest.mark.integration

QUIET = {"monitoring": False}  # fewer processes: the tests are about the edge's


def get(endpoint: str, key: str) -> int:
    try:
        return requests.get(endpoint + "/v1/models", timeout=5,
                            headers={"Authorization": f"Bearer {key}"}).status_code
    except requests.RequestException:
        return 0


def restarted(state_dir: Path, name: str, old_pid: int) -> bool:
    """The service runs again under a new pid, healthy, and status counts the restart."""
    service = status(state_dir).service(name)
    return (service is not None and service.pid != old_pid and service.healthy
            and service.restarts >= 1)


@pytest.mark.parametrize("name", ["gateway", "redis", "nginx"])
def test_a_killed_service_is_started_again_and_status_counts_it(start_sandbox, name, capsys):
    box = start_sandbox(sandbox=QUIET)
    state_dir = Path(box["state_dir"])
    key, _ = key_store(state_dir).create("acme", "paid")
    assert get(box["endpoint"], key) == 200
    victim = box[name]["pid"]

    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: restarted(state_dir, name, victim), 20)
    assert wait_until(lambda: get(box["endpoint"], key) == 200, 20)  # the key survived
    back_s = time.monotonic() - killed
    service = status(state_dir).service(name)
    assert service.restarts == 1 and service.last_exit == "killed by SIGKILL"
    assert status(state_dir).to_json()[name]["restarts"] == 1
    with capsys.disabled():
        print(f"\n[supervision] {name} killed: serving again after {back_s:.2f} s")


def test_keys_outlive_down_and_up_unless_thrown_away(start_sandbox):
    box = start_sandbox(sandbox=QUIET)
    state_dir = Path(box["state_dir"])
    config = load_config(state_dir / "config.json").config
    key, _ = key_store(state_dir).create("acme", "paid")
    down(state_dir)
    again = up(config, state_dir, edge_port_explicit=True).to_json()
    assert get(again["endpoint"], key) == 200
    down(state_dir)
    throwaway = up(config, state_dir, edge_port_explicit=True, keep_keys=False).to_json()
    try:
        assert get(throwaway["endpoint"], key) == 401
        assert key_store(state_dir).list() == []
    finally:
        down(state_dir)


def test_down_stops_the_supervision_first_and_nothing_comes_back(start_sandbox):
    box = start_sandbox(sandbox=QUIET)
    state_dir = Path(box["state_dir"])
    pids = [box["supervisor"]["pid"], *(b["pid"] for b in box["backends"]),
            *(v["pid"] for v in box.values() if isinstance(v, dict) and "pid" in v)]
    assert down(state_dir) >= len(set(pids))
    assert not (state_dir / FILE).exists()
    # Nothing the supervisor could have started again runs a moment later either.
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in pids)
    assert not status(state_dir).running


def test_unsupervised_a_killed_service_stays_down(start_sandbox):
    box = start_sandbox(sandbox=QUIET, supervise=False)
    state_dir = Path(box["state_dir"])
    assert "supervisor" not in box
    os.kill(box["gateway"]["pid"], signal.SIGKILL)
    assert wait_until(lambda: not status(state_dir).service("gateway").running, 5)
    time.sleep(0.5)
    gateway = status(state_dir).service("gateway")
    assert not gateway.running and gateway.restarts == 0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
