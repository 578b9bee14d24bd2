"""The sandbox's nginx upstreams come from the sync agent, as on AWS: a backend that dies
leaves the fleet and comes back when it answers /health again, a draining backend finishes its
streams, and reloads under load lose no request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from llmfleet.edge.members import read_members_file, write_members_file
from llmfleet.edge.sync import MemberState, read_state
from llmfleet.local.loadgen import LoadSpec, run_load_sync
from llmfleet.local.sandbox import load_state, status
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

FAST_SYNC = {"sync_interval_s": 1}  # the default is 10 s, as the seed's health checks


def _edge_view(state_dir: Path) -> dict[str, MemberState]:
    state = load_state(state_dir)
    assert state is not None
    return read_state(Path(state.sync_state_file))


def _upstream_lines(state_dir: Path) -> list[str]:
    conf = Path(load_state(state_dir).nginx_conf).read_text()
    return [line.strip() for line in conf.splitlines() if "# backend-" in line]


def _served_by(endpoint: str) -> str:
    with urllib.request.urlopen(endpoint + "/v1/models", timeout=10) as response:
        assert response.status == 200
        return response.headers["X-LLMFleet-Upstream"]


def test_a_killed_backend_leaves_and_rejoins_when_it_answers_again(start_sandbox):
    # Unsupervised: the backend stays dead until the test starts it again.
    box = start_sandbox(sandbox={"auth": False, "monitoring": False}, edge=FAST_SYNC,
                        supervise=False)
    state_dir = Path(box["state_dir"])
    victim = box["backends"][0]
    address = victim["url"].removeprefix("http://")
    assert _edge_view(state_dir)[victim["name"]] is MemberState.READY

    os.kill(victim["pid"], signal.SIGKILL)
    assert wait_until(lambda: _edge_view(state_dir).get(victim["name"]) is MemberState.DOWN, 15)
    assert any(line.endswith(f"down;  # {victim['name']}") for line in _upstream_lines(state_dir))
    assert status(state_dir).backends[0].state is MemberState.DOWN
    # Once nginx's new workers run, everything is answered by the other backend alone (until
    # then a request may try the dead one first, and is answered by the next).
    other = box["backends"][1]["url"].removeprefix("http://")
    assert wait_until(lambda: {_served_by(box["endpoint"]) for _ in range(10)} == {other}, 10)

    # Started again by hand on its port (as a person or a supervisor would): no `up` again.
    record = load_state(state_dir).process(victim["name"])
    with open(record.log, "ab") as log:
        again = subprocess.Popen(record.command, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(
            lambda: _edge_view(state_dir).get(victim["name"]) is MemberState.READY, 20)
        assert not any("down" in line for line in _upstream_lines(state_dir))
        assert wait_until(lambda: _served_by(box["endpoint"]) == address, 10)
    finally:
        again.terminate()
        again.wait(10)


def test_streams_survive_reloads_and_a_draining_backend_finishes_what_it_has(start_sandbox):
    box = start_sandbox(sandbox={"auth": False, "monitoring": False, "backends": 2},
                        edge=FAST_SYNC)
    state_dir = Path(box["state_dir"])
    members_file = Path(load_state(state_dir).members_file)
    spec = LoadSpec(url=box["endpoint"], requests=80, concurrency=16, stream=True,
                    output_tokens="uniform:150-300", max_duration_s=120, timeout_s=60)
    outcome = {}
    load = threading.Thread(target=lambda: outcome.update(report=run_load_sync(spec)))
    load.start()
    try:
        # Drain and restore each backend in turn while streams run: four reloads.
        for name in ("backend-1", "backend-1", "backend-2", "backend-2"):
            members = [replace(m, draining=not m.draining) if m.name == name else m
                       for m in read_members_file(members_file)]
            write_members_file(members_file, members)
            [member] = [m for m in members if m.name == name]
            expected = MemberState.DRAINING if member.draining else MemberState.READY
            assert wait_until(lambda n=name, e=expected: _edge_view(state_dir)[n] is e, 15)
            marked_down = any(line.endswith(f"down;  # {name}")
                              for line in _upstream_lines(state_dir))
            assert marked_down == member.draining
            assert status(state_dir).backends[int(name[-1]) - 1].state is expected
    finally:
        load.join(150)
    report = outcome["report"]
    # Streams in flight are never cut; a keep-alive connection an old worker closes after its
    # stream is answered on the client's retry, as with the official OpenAI clients.
    assert report.all_ok, json.dumps(report.errors_by_status)
    assert report.ok == 80 and report.broken_streams == 0
    sync_log = Path(load_state(state_dir).process("sync").log).read_text()
    assert sync_log.count("nginx reloaded") >= 4
