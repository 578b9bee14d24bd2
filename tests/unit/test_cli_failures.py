"""Every failure of the CLI is one line on stderr and an exit code, never a traceback: Ctrl-C
in the middle of a command, a state directory that is missing or is not a directory, an
error nobody planned for."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llmfleet import cli

REPO = Path(__file__).resolve().parents[2]


def llmfleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmfleet.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("[llmfleet] note:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def test_ctrl_c_in_the_middle_of_a_command_ends_it_with_one_line_and_130():
    # A "Redis" that accepts and never answers: `keys list` waits on it until interrupted.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        command = subprocess.Popen(
            [sys.executable, "-m", "llmfleet.cli", "keys", "--redis-url",
             f"redis://127.0.0.1:{port}/0", "list"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # A suite started in the background by a non-interactive shell inherits SIGINT
            # ignored; the command gets the default back, as a terminal would give it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        silent.settimeout(30)
        connection, _ = silent.accept()  # the command is well inside main() now
        with connection:
            command.send_signal(signal.SIGINT)
            _, stderr = command.communicate(timeout=30)
    assert command.returncode == 130, stderr
    assert one_line(stderr) == "llmfleet: interrupted"


@pytest.mark.parametrize(("args", "code", "says"), [
    (["status"], 1, "The sandbox is not running"),
    (["down"], 0, "sandbox is down (0 processes stopped)"),
    (["keys", "list"], 2, "no sandbox with Redis is running here"),
    (["top"], 1, "no Prometheus"),
])
def test_a_missing_state_directory_is_one_line(tmp_path, args, code, says):
    missing = str(tmp_path / "never" / "made")
    where = 1 if args[0] == "keys" else len(args)
    result = llmfleet(*args[:where], "--state-dir", missing, *args[where:])
    assert result.returncode == code
    assert says in (result.stdout + one_line(result.stderr) if result.stderr
                    else result.stdout)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["status"], ["down"], ["up", "--no-supervise"],
                                  ["keys", "list"]])
def test_a_state_directory_that_is_a_file_is_one_line(tmp_path, args):
    file = tmp_path / "a-file"
    file.write_text("not a directory")
    where = 1 if args[0] == "keys" else len(args)
    result = llmfleet(*args[:where], "--state-dir", str(file), *args[where:])
    assert result.returncode in (1, 2)
    assert "is not a directory" in one_line(result.stderr)


def test_a_state_directory_below_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = llmfleet("up", "--state-dir", str(blocker / "below"))
    assert result.returncode == 1
    assert f"{blocker} is a file" in one_line(result.stderr)


def test_a_state_directory_that_cannot_be_made_is_one_line():
    result = llmfleet("up", "--state-dir", "/proc/1/no-such-thing")  # procfs makes nothing
    assert result.returncode == 1
    assert "cannot make the state directory" in one_line(result.stderr)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(_state_dir: Path) -> None:
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr("llmfleet.local.sandbox.status", broken)
    assert cli.main(["status", "--state-dir", "/nonexistent"]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("llmfleet: unexpected RuntimeError: something nobody planned for")
    monkeypatch.setenv("LLMFLEET_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["status", "--state-dir", "/nonexistent"])


def test_an_os_error_names_the_file(monkeypatch, capsys):
    def denied(_state_dir: Path) -> None:
        raise PermissionError(13, "Permission denied", "/some/state.json")

    monkeypatch.setattr("llmfleet.local.sandbox.status", denied)
    assert cli.main(["status", "--state-dir", "/nonexistent"]) == 1
    assert one_line(capsys.readouterr().err) == "llmfleet: Permission denied: /some/state.json"
