"""The sandbox's supervisor on its own: how it starts, notices an end, backs off and records."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from llmfleet.local.sandbox.supervisor import (
    BACKOFF_FIRST_S,
    FILE,
    Supervisor,
    describe_exit,
    read_supervision,
)


def run_until(supervisor: Supervisor, condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.check()
        if condition():
            return True
        time.sleep(0.01)
    return False


def start(supervisor: Supervisor, tmp_path: Path, name: str, code: str, *,
          restart: bool = True) -> dict:
    return supervisor.handle({"op": "start", "name": name, "restart": restart,
                              "command": [sys.executable, "-c", code],
                              "log": str(tmp_path / f"{name}.log")})


def test_a_failing_process_is_started_again_with_a_growing_backoff(tmp_path):
    supervisor = Supervisor(tmp_path)
    said: list[str] = []
    supervisor.say = said.append
    started = start(supervisor, tmp_path, "crasher", "import sys; sys.exit(3)")
    assert started["pid"] > 0
    entry = supervisor.processes["crasher"]
    assert run_until(supervisor, lambda: entry.restarts >= 4)
    waits = [float(m.rsplit(" in ", 1)[1].removesuffix(" s")) for m in said if "again in" in m]
    # Each exit in a row doubles the wait, from BACKOFF_FIRST_S.
    assert waits[:4] == [BACKOFF_FIRST_S * 2 ** n for n in range(4)]
    assert entry.last_exit == "exit code 3"
    recorded = read_supervision(tmp_path)["crasher"]
    assert recorded["restarts"] == entry.restarts and recorded["last_exit"] == "exit code 3"
    assert recorded["pid"] == entry.pid


def test_a_process_not_to_restart_or_forgotten_is_only_reaped(tmp_path):
    supervisor = Supervisor(tmp_path)
    start(supervisor, tmp_path, "once", "pass", restart=False)
    start(supervisor, tmp_path, "sleeper", "import time; time.sleep(0.3)")
    assert supervisor.handle({"op": "forget", "name": "sleeper"}) == {"ok": True}
    assert run_until(supervisor, lambda: all(e.process is None
                                             for e in supervisor.processes.values()))
    time.sleep(BACKOFF_FIRST_S * 3)
    supervisor.check()
    assert all(e.restarts == 0 for e in supervisor.processes.values())
    assert supervisor.processes["once"].last_exit == "exit code 0"


def test_a_command_that_cannot_start_is_an_error_not_a_crash(tmp_path):
    supervisor = Supervisor(tmp_path)
    answer = supervisor.handle({"op": "start", "name": "ghost", "command": ["/nonexistent"],
                                "log": str(tmp_path / "ghost.log")})
    assert "could not start" in answer["error"]
    assert "unknown request" in supervisor.handle({"op": "reboot"})["error"]


def test_exits_are_described_as_people_read_them():
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-200) == "killed by signal 200"


def test_the_record_is_whole_json(tmp_path):
    supervisor = Supervisor(tmp_path)
    start(supervisor, tmp_path, "sleeper", "import time; time.sleep(5)")
    data = json.loads((tmp_path / FILE).read_text())
    entry = data["processes"]["sleeper"]
    assert entry["pid"] > 0 and entry["restarts"] == 0 and entry["last_exit"] is None
    supervisor.processes["sleeper"].process.kill()
    supervisor.processes["sleeper"].process.wait()
