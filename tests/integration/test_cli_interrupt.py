"""Ctrl-C during `llmfleet up`: one line, exit 130, and nothing left running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.local.sandbox.supervisor import read_supervision

pytestmark = pytest.mark.integration

LLMFLEET = str(Path(sys.executable).with_name("llmfleet"))


def recorded(state_dir: Path) -> list[dict]:
    try:
        return json.loads((state_dir / "state.json").read_text())["processes"]
    except (OSError, ValueError):
        return []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_ctrl_c_during_up_stops_what_it_started_in_one_line(tmp_path):
    state_dir = tmp_path / "state"
    command = subprocess.Popen([LLMFLEET, "up", "--state-dir", str(state_dir),
                                "--port", str(free_port())],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Part way: the supervisor and a few services started, the rest not yet.
        assert wait_until(lambda: len(recorded(state_dir)) >= 4, 60)
        seen = {p["pid"] for p in recorded(state_dir)}
        seen |= {e["pid"] for e in read_supervision(state_dir).values()}
        command.send_signal(signal.SIGINT)
        _, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    lines = [line for line in stderr.splitlines() if not line.startswith("[llmfleet]")]
    assert command.returncode == 130, stderr
    assert lines == ["llmfleet: interrupted"], stderr
    assert not (state_dir / "state.json").exists()
    assert wait_until(lambda: not any(alive(pid) for pid in seen), 10), seen
