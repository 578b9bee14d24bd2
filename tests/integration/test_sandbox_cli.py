"""`llmfleet up / status / down` as a user runs them: real processes, free loopback ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import ProcessRecord, is_running, launch, stop, wait_until

pytestmark = pytest.mark.integration

LLMFLEET = str(Path(sys.executable).with_name("llmfleet"))


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    subprocess.run([LLMFLEET, "down", "--state-dir", str(state)], capture_output=True,
                   timeout=60, check=False)


def cli(*args: str, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LLMFLEET, *args, "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=120, check=False)


def up(state: Path, *args: str) -> subprocess.CompletedProcess:
    return cli("up", "--port", str(free_port()), *args, state=state)


def status(state: Path) -> dict:
    return json.loads(cli("status", "--json", state=state).stdout)


def pids(report: dict) -> list[int]:
    """Every process the sandbox runs: backends, and one per other component."""
    others = [v["pid"] for v in report.values() if isinstance(v, dict) and "pid" in v]
    return [*others, *(b["pid"] for b in report["backends"])]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_up_starts_healthy_backends_and_edge_and_status_reports_them(state_dir):
    result = up(state_dir, "--backends", "3")
    assert result.returncode == 0, result.stderr
    report = status(state_dir)
    assert report["running"] and report["endpoint"] in result.stdout
    assert [b["name"] for b in report["backends"]] == ["backend-1", "backend-2", "backend-3"]
    for backend in report["backends"]:
        assert backend["healthy"] and backend["url"].startswith("http://127.0.0.1:")
        assert Path(backend["log"]).is_file() and alive(backend["pid"])
    assert report["nginx"]["healthy"]
    assert report["redis"]["healthy"] and report["redis"]["url"].startswith("redis://127.0.0.1:")
    assert report["gateway"]["healthy"]


def test_a_second_up_is_refused_while_the_first_runs(state_dir):
    assert up(state_dir).returncode == 0
    again = up(state_dir)
    assert again.returncode == 1
    assert "already running" in again.stderr and "llmfleet down" in again.stderr


def test_down_stops_exactly_what_up_started_and_is_idempotent(state_dir):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert up(state_dir).returncode == 0
        started = pids(status(state_dir))
        assert cli("down", state=state_dir).returncode == 0
        assert wait_until(lambda: not any(alive(pid) for pid in started), 10)
        assert bystander.poll() is None
        assert cli("down", state=state_dir).returncode == 0
        assert status(state_dir)["running"] is False
    finally:
        bystander.kill()
        bystander.wait()


def test_down_after_a_crash_clears_stale_records_and_spares_reused_pids(state_dir):
    assert up(state_dir).returncode == 0
    report = status(state_dir)
    for pid in pids(report):
        os.killpg(pid, signal.SIGKILL)
    assert wait_until(lambda: not status(state_dir)["running"], 10)
    # Make one record point at a live process that merely has the same pid number now.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        state_file = state_dir / "state.json"
        state = json.loads(state_file.read_text())
        state["processes"][0]["pid"] = stranger.pid
        state_file.write_text(json.dumps(state))
        assert cli("down", state=state_dir).returncode == 0
        assert stranger.poll() is None, "down killed a process it did not start"
        assert not state_file.exists()
        # A fresh up works after the crash.
        assert up(state_dir).returncode == 0
    finally:
        stranger.kill()
        stranger.wait()


def test_backends_move_to_free_ports_when_the_preferred_ones_are_taken(state_dir, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        config = tmp_path / "sandbox.yaml"
        config.write_text(f"sandbox:\n  base_port: {taken}\n")
        assert up(state_dir, "--config", str(config)).returncode == 0
        ports = [int(b["url"].rsplit(":", 1)[1]) for b in status(state_dir)["backends"]]
    assert taken not in ports and len(set(ports)) == 2
    assert all(b["healthy"] for b in status(state_dir)["backends"])


def test_an_explicit_port_in_use_is_a_clear_error_and_leaves_nothing_running(state_dir):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = cli("up", "--port", str(port), state=state_dir)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert status(state_dir)["running"] is False


def test_bad_values_on_the_command_line_are_named(state_dir):
    result = up(state_dir, "--backends", "0")
    assert result.returncode == 2
    assert "sandbox.backends: got 0" in result.stderr


def test_a_backend_that_fails_to_start_stops_the_rest_and_points_to_its_log(tmp_path):
    # A context longer than the simulated KV cache makes the backend refuse to start,
    # as vLLM does; up must report it and leave nothing behind.
    from llmfleet.config import validate
    from llmfleet.local.sandbox import SandboxError
    from llmfleet.local.sandbox import up as sandbox_up

    config = validate({"model": {"max_model_len": 1_000_000},
                       "sandbox": {"edge_port": free_port(), "base_port": free_port()}}, "test")
    with pytest.raises(SandboxError, match="exited during start-up") as caught:
        sandbox_up(config, tmp_path / "state", edge_port_explicit=True)
    assert re.search(r"backend-\d exited", str(caught.value))
    assert "KV cache" in str(caught.value)  # the backend's own reason, from its log
    assert not (tmp_path / "state" / "state.json").exists()


def test_stop_signals_only_a_matching_start_time(tmp_path):
    record = launch("sleeper", "backend", [sys.executable, "-c", "import time; time.sleep(60)"],
                    tmp_path / "sleeper.log", "", "")
    imposter = ProcessRecord(**{**record.to_dict(), "start_ticks": record.start_ticks + 1})
    assert not stop(imposter)
    assert is_running(record)
    assert stop(record)
    assert not is_running(record)


def test_demo_brings_the_sandbox_up_shows_limits_sends_traffic_and_says_how_to_stop(state_dir):
    result = cli("demo", "--requests", "6", "--concurrency", "3", "--port", str(free_port()),
                 state=state_dir)
    assert result.returncode == 0, result.stderr
    assert "a free-tier key: 10 requests admitted, then 429" in result.stderr
    assert "requests   6/6 finished, 6 ok, 0 failed" in result.stdout
    assert "Authorization: Bearer sk-lf-" in result.stdout
    assert "llmfleet down" in result.stdout
    assert status(state_dir)["running"]
