"""`up --autoscale`: the policy runs live against the sandbox's Prometheus. A surge that builds
a queue makes backends join (after their cold start, once their /health answers); idle makes
the extra ones drain and leave; not one request fails over the whole run, also while backends
drain under a trickle of traffic."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest

from llmfleet.config import validate
from llmfleet.edge.members import read_members_file
from llmfleet.local import top
from llmfleet.local.loadgen import LoadReport, LoadSpec, run_load_sync
from llmfleet.local.sandbox import SandboxError, down, load_state, status, up
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

# One backend of 4 slots to start with, at most 3; decisions every 2 s on windows of seconds.
CONFIG: dict[str, dict[str, Any]] = {
    "fleet": {"min_size": 1, "desired": 1, "max_size": 3},
    "autoscaling": {"policy": "adaptive", "interval_s": 2, "queue_threshold": 2,
                    "scale_out_after_s": 4, "panic_after_s": 2, "scale_in_after_s": 10,
                    "cooldown_s": 5},
    "edge": {"sync_interval_s": 1},
    "alerts": {"scrape_interval_s": 1, "evaluation_interval_s": 1, "rate_window_s": 10},
    "sandbox": {"backends": 1, "max_num_seqs": 4, "boot_delay_s": 2, "auth": False},
}


@dataclass
class Box:
    state_dir: Path
    endpoint: str
    prometheus: str


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    """Start an autoscaled sandbox with CONFIG and `changes` (section → keys); it is taken
    down when the test ends, also when it fails."""
    started: list[Path] = []

    def start(**changes: dict[str, Any]) -> Box:
        data = {section: {**values, **changes.get(section, {})}
                for section, values in CONFIG.items()}
        data["sandbox"].update(edge_port=free_port(), base_port=free_port())
        state_dir = tmp_path / f"sandbox-{len(started)}"
        started.append(state_dir)
        report = up(validate(data, "test"), state_dir, edge_port_explicit=True, autoscale=True)
        return Box(state_dir, report.endpoint, report.service("prometheus").url)

    yield start
    for state_dir in started:
        down(state_dir)


@pytest.fixture
def sandbox(start) -> Box:
    return start()


def backend_states(state_dir: Path) -> dict[str, str]:
    return {b.name: b.state.value for b in status(state_dir).backends}


def scraped_backends(prometheus: str) -> float:
    query = urlencode({"query": 'count(up{job="vllm"} == 1)'})
    with urlopen(f"{prometheus}/api/v1/query?{query}", timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def in_thread(target) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as error:  # reported by the test, not lost in the thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def finished(thread: threading.Thread, outcome: dict[str, Any], timeout_s: float) -> Any:
    thread.join(timeout_s)
    assert not thread.is_alive(), "the load did not end by its own bounds"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def failures(report: LoadReport) -> str:
    return json.dumps({"errors": report.errors_by_status, "broken": report.broken_streams})


def steady_load(endpoint: str, concurrency: int, tokens: int, done: threading.Event):
    """Runs of a few requests each, one after the other, until `done` (at most 60 runs); in a
    thread. Returns the thread and its outcome (the runs' reports)."""
    def runs() -> list[LoadReport]:
        reports = []
        while not done.is_set() and len(reports) < 60:
            reports.append(run_load_sync(LoadSpec(
                url=endpoint, requests=4 * concurrency, concurrency=concurrency,
                output_tokens=f"fixed:{tokens}", max_duration_s=60, timeout_s=60,
                seed=len(reports))))
        return reports

    return in_thread(runs)


def assert_all_ok(reports: list[LoadReport]) -> None:
    assert reports
    failed = [failures(r) for r in reports if not r.all_ok or r.broken_streams]
    assert not failed, failed


def test_a_surge_adds_backends_and_idle_drains_them_without_a_failed_request(sandbox,
                                                                           capsys):
    state_dir = sandbox.state_dir
    assert backend_states(state_dir) == {"backend-1": "ready"}
    assert status(state_dir).to_json()["autoscaler"]["policy"] == "adaptive"

    # 24 clients on 4 slots: a queue of 20 that the policy sizes for at once (up to 3).
    surge = LoadSpec(url=sandbox.endpoint, requests=160, concurrency=24,
                     output_tokens="fixed:64", max_duration_s=120, timeout_s=60)
    thread, outcome = in_thread(lambda: run_load_sync(surge))
    assert wait_until(lambda: list(backend_states(state_dir).values()).count("ready") == 3,
                      60, interval_s=0.5), backend_states(state_dir)
    # Prometheus found the new backends in its targets file and scrapes them.
    assert wait_until(lambda: scraped_backends(sandbox.prometheus) == 3, 20, interval_s=0.5)
    report = finished(thread, outcome, 150)
    assert report.all_ok and report.ok == 160 and report.broken_streams == 0, failures(report)
    assert len(report.requests_by_backend) == 3  # the new backends served their share

    # A trickle (one client, never a queue) runs while the idle window passes and the extra
    # backends drain: what they serve finishes, nothing new reaches them.
    done = threading.Event()
    thread, outcome = steady_load(sandbox.endpoint, 1, 64, done)
    try:
        assert wait_until(lambda: len(backend_states(state_dir)) == 1, 90, interval_s=0.5), \
            backend_states(state_dir)
    finally:
        done.set()
    assert_all_ok(finished(thread, outcome, 90))

    # The last backend standing is in every record; the others are gone from all of them.
    state = load_state(state_dir)
    [survivor] = [p for p in state.processes if p.kind == "backend"]
    assert [m.name for m in read_members_file(Path(state.members_file))] == [survivor.name]
    assert wait_until(lambda: scraped_backends(sandbox.prometheus) == 1, 20, interval_s=0.5)
    autoscaler = status(state_dir).to_json()["autoscaler"]
    assert autoscaler["desired"] == 1 and autoscaler["running"]
    assert autoscaler["last_decision"]["reason"]
    log = Path(load_state(state_dir).process("autoscaler").log).read_text()
    assert log.count("drained and stopped") == 2 and log.count("started backend-") == 2

    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    assert top.run(parser.parse_args(["--once", "--state-dir", str(state_dir)])) == 0
    shown = capsys.readouterr().out
    assert f"Fleet       {survivor.name} ready" in shown
    assert "Autoscaler  adaptive: 1 backend wanted (1 to 3); " in shown


def test_busy_backends_drain_to_the_end_under_load(start):
    # The seed's rule takes out the least busy ready backend, busy or not: each of the two it
    # drains is serving streams of several seconds, which must end whole.
    box = start(autoscaling={"policy": "seed", "queue_threshold": 50},
                fleet={"min_size": 1, "desired": 3, "max_size": 3}, sandbox={"backends": 3})
    done = threading.Event()
    thread, outcome = steady_load(box.endpoint, 4, 128, done)
    try:
        assert wait_until(lambda: len(backend_states(box.state_dir)) == 1, 120,
                          interval_s=0.5), backend_states(box.state_dir)
    finally:
        done.set()
    assert_all_ok(finished(thread, outcome, 120))
    log = Path(load_state(box.state_dir).process("autoscaler").log).read_text()
    assert log.count("drained and stopped") == 2


def simulated_backends_on(ports: set[int]) -> list[str]:
    """Command lines of simulated backends on any of `ports`, from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # the process has just exited
        if ("llmfleet.local.simbackend" in argv and "--port" in argv
                and int(argv[argv.index("--port") + 1]) in ports):
            found.append(" ".join(argv))
    return found


def test_down_stops_the_autoscaler_first_and_every_backend_it_started(sandbox):
    state_dir = sandbox.state_dir
    surge = LoadSpec(url=sandbox.endpoint, requests=60, concurrency=24,
                     output_tokens="fixed:64", max_duration_s=60, timeout_s=30)
    thread, outcome = in_thread(lambda: run_load_sync(surge))
    # Taken down while backends boot: the autoscaler may be adding one as `down` begins.
    assert wait_until(lambda: "booting" in backend_states(state_dir).values(), 60,
                      interval_s=0.2)
    log = Path(load_state(state_dir).process("autoscaler").log)
    down(state_dir)
    finished(thread, outcome, 90)
    ports = {int(port) for port in re.findall(r"started backend-\d+ on http://[\d.]+:(\d+)",
                                              log.read_text())}
    assert ports and not simulated_backends_on(ports)
    assert load_state(state_dir) is None


@pytest.mark.parametrize(("overrides", "max_backends", "message"), [
    ({"sandbox": {"monitoring": False}}, None, "turn sandbox.monitoring on"),
    ({"sandbox": {"backends": 3}}, 2, "more than the autoscaler's maximum 2"),
    ({"fleet": {"min_size": 2, "desired": 2, "max_size": 3}}, 1, "below fleet.min_size 2"),
])
def test_bad_bounds_are_refused_before_anything_starts(tmp_path, overrides, max_backends,
                                                       message):
    with pytest.raises(SandboxError, match=message):
        up(validate(overrides, "test"), tmp_path / "sandbox", autoscale=True,
           max_backends=max_backends)
    assert not (tmp_path / "sandbox").exists()


def test_max_backends_needs_autoscale(tmp_path):
    with pytest.raises(SandboxError, match="add --autoscale"):
        up(validate({}, "test"), tmp_path / "sandbox", max_backends=3)


LLMFLEET = str(Path(sys.executable).with_name("llmfleet"))


def cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LLMFLEET, *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_cli_starts_it_and_status_shows_its_decisions(tmp_path):
    state_dir = tmp_path / "cli"
    config = tmp_path / "sandbox.yaml"
    config.write_text(f"sandbox: {{auth: false, base_port: {free_port()}}}\n")
    try:
        started = cli("up", "--config", str(config), "--autoscale", "--max-backends", "3",
                      "--port", str(free_port()), state_dir=state_dir)
        assert started.returncode == 0, started.stderr
        assert "starting the autoscaler (adaptive, 1 to 3 backends)" in started.stderr
        report = json.loads(cli("status", "--json", state_dir=state_dir).stdout)
        autoscaler = report["autoscaler"]
        assert autoscaler["running"] and autoscaler["healthy"]
        assert (autoscaler["policy"], autoscaler["desired"]) == ("adaptive", 2)
        assert "Autoscaler adaptive: 2 backends wanted (1 to 3)" in cli(
            "status", state_dir=state_dir).stdout
    finally:
        stopped = cli("down", state_dir=state_dir)
    # The supervisor first (nothing is started again), then the autoscaler (nothing is added).
    first, second = stopped.stderr.splitlines()[:2]
    assert "stopped supervisor" in first and "stopped autoscaler" in second


def test_the_cli_refuses_max_backends_without_autoscale(tmp_path):
    refused = cli("up", "--max-backends", "3", state_dir=tmp_path / "cli")
    assert refused.returncode == 1 and "add --autoscale" in refused.stderr
