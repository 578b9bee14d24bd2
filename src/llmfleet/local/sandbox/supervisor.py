"""The sandbox's supervisor: what systemd does for the edge's services on AWS.

`up` starts it first, and asks it to start every other process (so does the autoscaler): each
one is its child, so it learns how each one ends. When a supervised process exits, whatever
the reason, it kills what is left of the process's group (nginx's workers), waits a backoff
(0.1 s, doubled for each exit in a row up to 10 s; a process that ran `STABLE_S` starts again
at 0.1 s) and starts the same command again. Backends the autoscaler manages are started here
too but not restarted: the autoscaler replaces them itself.

If the state directory disappears (removed while the sandbox runs), nothing could find or stop
these processes any more: the supervisor stops every one of them, then itself.

It keeps what it did in `supervision.json` (the current pid and start time of each process,
its restarts and how it last ended), which `load_state` lays over the sandbox's records, so
`status`, `down` and the autoscaler see the processes that run now. `down` stops it first,
so nothing is started again while the rest stops; its children keep running until `down`
stops them. Requests come over a Unix socket in the abstract namespace, from processes of the
same user only.

    python -m llmfleet.local.sandbox.supervise --state-dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llmfleet.errors import LlmfleetError
from llmfleet.local.sandbox.processes import start_ticks

PROCESS = "supervisor"  # its name and kind in the sandbox's records
FILE = "supervision.json"
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 10.0
STABLE_S = 30.0  # a process that ran this long before it exited starts again without delay
POLL_S = 0.05
ORPHAN_CHECK_S = 1.0  # how often it checks that its state directory is still there
STOP_GRACE_S = 5.0
REQUEST_TIMEOUT_S = 10.0


class SupervisorError(LlmfleetError):
    """The supervisor could not be reached or could not do what was asked."""

    def __init__(self, message: str, *, exited: bool = False):
        super().__init__(message)
        self.exited = exited  # the process it started ended at once


@dataclass
class Supervised:
    """One process the supervisor started, as kept in supervision.json."""

    name: str
    command: list[str]
    log: str
    env: dict[str, str]
    restart: bool  # start it again when it exits
    pid: int = 0
    start_ticks: int = 0
    started_at: float = 0.0  # time.time() of the latest start
    restarts: int = 0
    last_exit: str | None = None  # "exit code 1", "killed by SIGKILL"
    last_exit_at: float | None = None
    exits_in_a_row: int = 0  # exits of runs shorter than STABLE_S, for the backoff
    restart_at: float | None = None  # time.monotonic() of the next start, while waiting
    process: subprocess.Popen | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("process", "env", "restart_at")}
        data["waiting_to_restart"] = self.restart_at is not None
        return data


def socket_name(state_dir: Path) -> bytes:
    """The supervisor's address: abstract (no file, so no path-length limit), one per state
    directory."""
    tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:24]
    return b"\0llmfleet-supervisor-" + tag.encode()


def read_supervision(state_dir: Path) -> dict[str, dict[str, Any]]:
    """What the supervisor last wrote, by process name; empty when nothing is supervised."""
    try:
        return json.loads((state_dir / FILE).read_text())["processes"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # being replaced this very moment is the only way to get here


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        found = folder.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


# -- the client: what `up` and the autoscaler call ------------------------------------------


def ask(state_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the sandbox's supervisor and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(REQUEST_TIMEOUT_S)
        try:
            connection.connect(socket_name(state_dir))
            connection.sendall(json.dumps(request).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except OSError as error:
            raise SupervisorError(f"the sandbox's supervisor does not answer ({error}); see "
                                  f"{state_dir / 'logs' / 'supervisor.log'}") from None
    try:
        answer = json.loads(reply)
    except ValueError:
        raise SupervisorError("the sandbox's supervisor gave no answer; see "
                              f"{state_dir / 'logs' / 'supervisor.log'}") from None
    if "error" in answer:
        raise SupervisorError(answer["error"], exited=bool(answer.get("exited")))
    return answer


# -- the supervisor itself ---------------------------------------------------------------


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.processes: dict[str, Supervised] = {}
        self.stopping = False
        self._home = _identity(state_dir)

    def say(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)

    # requests

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True}
        if op == "start":
            return self.start(request)
        if op == "forget":
            entry = self.processes.get(request.get("name", ""))
            if entry is not None:
                entry.restart = False
                entry.restart_at = None
                self.save()
            return {"ok": True}
        return {"error": f"unknown request {op!r}"}

    def start(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["name"]
        entry = Supervised(name, list(request["command"]), request["log"],
                           dict(request.get("env") or {}), bool(request.get("restart", True)))
        try:
            self._spawn(entry)
        except OSError as error:
            return {"error": f"{name} could not start: {error}"}
        if entry.pid == 0:
            return {"error": f"{name} exited at once; see {entry.log}", "exited": True}
        self.processes[name] = entry
        self.save()
        how = "supervised" if entry.restart else "not restarted"
        self.say(f"started {name} (pid {entry.pid}, {how})")
        return {"pid": entry.pid, "start_ticks": entry.start_ticks}

    def _spawn(self, entry: Supervised) -> None:
        Path(entry.log).parent.mkdir(parents=True, exist_ok=True)
        with open(entry.log, "ab") as out:
            # A session of its own, as `up` gives every process: stopping its group later also
            # stops its children.
            process = subprocess.Popen(entry.command, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, **entry.env})
        ticks = start_ticks(process.pid)
        if ticks is None:
            process.wait()
            entry.pid, entry.start_ticks = 0, 0
            return
        entry.process, entry.pid, entry.start_ticks = process, process.pid, ticks
        entry.started_at = time.time()

    # the loop

    def check(self) -> None:
        """Reap every child that exited; start again the supervised ones whose wait is over."""
        changed = False
        now = time.monotonic()
        for entry in self.processes.values():
            process = entry.process
            if process is not None and process.poll() is not None:
                changed = True
                self._exited(entry, process.returncode, now)
            if entry.restart_at is not None and now >= entry.restart_at and not self.stopping:
                changed = True
                self._restart(entry)
        if changed:
            self.save()

    def _exited(self, entry: Supervised, returncode: int, now: float) -> None:
        entry.process = None
        ran_s = time.time() - entry.started_at
        entry.last_exit = describe_exit(returncode)
        entry.last_exit_at = time.time()
        # What is left of its group (nginx's workers) would hold its ports.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(entry.pid, signal.SIGKILL)
        if not entry.restart:
            self.say(f"{entry.name} (pid {entry.pid}) ended: {entry.last_exit}")
            return
        entry.exits_in_a_row = 1 if ran_s >= STABLE_S else entry.exits_in_a_row + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (entry.exits_in_a_row - 1))
        entry.restart_at = now + delay
        self.say(f"{entry.name} (pid {entry.pid}) ended after {ran_s:.1f} s: "
                 f"{entry.last_exit}; starting it again in {delay:g} s")

    def _restart(self, entry: Supervised) -> None:
        entry.restart_at = None
        entry.restarts += 1
        try:
            self._spawn(entry)
        except OSError as error:
            self._exited(entry, 127, time.monotonic())
            self.say(f"{entry.name} could not start again: {error}")
            return
        if entry.pid == 0:
            self._exited(entry, 1, time.monotonic())
            return
        self.say(f"started {entry.name} again (pid {entry.pid}, restart {entry.restarts})")

    def save(self) -> None:
        if self.orphaned():
            return  # nowhere to keep it
        path = self.state_dir / FILE
        candidate = path.with_name(FILE + ".tmp")
        candidate.write_text(json.dumps(
            {"pid": os.getpid(),
             "processes": {name: e.to_json() for name, e in self.processes.items()}},
            indent=2))
        os.replace(candidate, path)  # readers never see half a file

    def orphaned(self) -> bool:
        """The state directory is gone (or another took its place): no `down` can find
        these processes any more."""
        return _identity(self.state_dir) != self._home

    def stop_all(self) -> None:
        """Stop every running child and its group: SIGTERM, then SIGKILL after a grace."""
        running = [e for e in self.processes.values() if e.process is not None]
        for entry in running:
            entry.restart = False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(entry.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for entry in running:
            assert entry.process is not None
            try:
                entry.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(entry.pid, signal.SIGKILL)
                entry.process.wait()

    def serve(self, listener: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        next_orphan_check = time.monotonic() + ORPHAN_CHECK_S
        while not self.stopping:
            for _ in selector.select(timeout=POLL_S):
                self._answer(listener)
            self.check()
            if time.monotonic() >= next_orphan_check:
                next_orphan_check = time.monotonic() + ORPHAN_CHECK_S
                if self.orphaned():
                    self.say(f"the state directory {self.state_dir} is gone: stopping "
                             "everything the sandbox ran")
                    self.stopping = True
                    self.stop_all()

    def _answer(self, listener: socket.socket) -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(REQUEST_TIMEOUT_S)
            try:
                uid = struct.unpack("3i", connection.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
                if uid != os.getuid():
                    return  # only the user who started the sandbox may start processes in it
                request = b""
                while not request.endswith(b"\n"):
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                try:
                    answer = self.handle(json.loads(request))
                except (ValueError, KeyError, TypeError) as error:
                    answer = {"error": f"bad request: {error}"}
                connection.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.local.sandbox.supervise",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    supervisor = Supervisor(state_dir)

    def stop(*_: object) -> None:
        supervisor.stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(socket_name(state_dir))
    except OSError as error:
        print(f"supervisor: cannot listen ({error}): is another one running for {state_dir}?",
              file=sys.stderr)
        return 1
    listener.listen(64)
    supervisor.save()  # its health check: the file exists once it listens
    supervisor.say(f"supervising the sandbox in {state_dir}")
    supervisor.serve(listener)
    listener.close()
    supervisor.say("stopped; the processes it started keep running until `down` stops them")
    return 0
