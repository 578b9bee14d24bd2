"""`--startup-delay`: the simulated backend listens only after a cold start, as vLLM does once
its model is loaded, and a stop during the delay ends it cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmfleet.local.sandbox.health import answers
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until


@pytest.fixture
def backend(tmp_path: Path) -> Iterator:
    started: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[subprocess.Popen, int, Path]:
        port, log = free_port(), tmp_path / f"backend-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "llmfleet.local.simbackend", "--port", str(port), *args],
                stdout=out, stderr=subprocess.STDOUT)
        started.append(process)
        return process, port, log

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_it_does_not_listen_during_the_delay_and_a_sigterm_ends_it(backend):
    process, port, log = backend("--startup-delay", "600")
    assert wait_until(lambda: "listens in 600 s" in log.read_text(), 20)
    assert refuses(port)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert "listening on" not in log.read_text()


def test_it_answers_health_once_the_delay_is_over(backend):
    _, port, log = backend("--startup-delay", "0.5")
    assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/health"), 20)
    lines = log.read_text().splitlines()
    assert "listens in 0.5 s" in lines[0] and "listening on" in lines[1]


def test_a_negative_delay_is_a_usage_error(backend):
    process, _, log = backend("--startup-delay", "-1")
    assert process.wait(timeout=20) == 2
    assert "startup_delay_s must be a finite number of seconds >= 0" in log.read_text()
