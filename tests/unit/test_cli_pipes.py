"""A reader that goes away early (`llmfleet ... | head -1`) ends the command quietly: no
traceback, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [
    ["cost", "stacks/Pulumi.university-prod.yaml", "--json"],
    ["check-config", "examples/sandbox.yaml"],
])
def test_a_closed_pipe_ends_the_command_without_a_traceback(args):
    command = subprocess.Popen([sys.executable, "-m", "llmfleet.cli", *args], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    command.stdout.close()  # the reader is gone before the first line
    error = command.stderr.read().decode()
    assert command.wait(60) == 1
    assert "Traceback" not in error and "BrokenPipeError" not in error, error
