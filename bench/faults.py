"""The fault matrix: what clients see when a part of the sandbox fails under steady load.

A supervised sandbox (2 simulated backends, API keys, monitoring) takes a steady mix of
streaming and plain chat completions from the official `openai` client (no client retries,
so every failure the edge lets through counts). For each fault, in turn: load for a while,
the fault, load for a while after; then the sandbox must be whole again before the next. Per
fault it reports requests that failed (plain ones, and streams refused before their first
token), streams cut after their first token, the seconds from the fault until every request
succeeds again (to the start of the last failed one), for a hung backend the seconds until it
receives no new request, and whether API keys and rate-limit counters survived.

Faults: kill -9 of a backend, of the gateway, of Redis, of an nginx worker and of Prometheus;
SIGSTOP of a backend (a hang) for hang_s; a backend answering 503 for hold_s; a backend whose
/health fails for hold_s while it still serves. Each row also states what is expected, and
whether it held, and counts the upstream errors nginx logged meanwhile (its error log).

    .venv/bin/python bench/faults.py [--short] [--json] [--only NAME ...] [--keep-logs DIR]

--short (what tests/integration/test_fault_matrix.py runs): shorter windows and hang, the
same faults. --keep-logs DIR keeps the sandbox's logs, nginx's error log among them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai
from common import say

from llmfleet.config import validate
from llmfleet.edge.sync import HEALTH_TIMEOUT_S
from llmfleet.local.sandbox import down, status, up
from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until

CONCURRENCY = 8
STREAM_TOKENS, PLAIN_TOKENS = 48, 8
REQUEST_TIMEOUT_S = 60.0
TIERS = {
    "enterprise": {"requests": "unlimited"},
    "paid": {"requests": 100_000, "window_s": 600, "fail_mode": "open"},
    "free": {"requests": 10, "fail_mode": "closed"},
}


@dataclass(frozen=True)
class Timing:
    before_s: float  # load before the fault
    after_s: float  # load after it
    hold_s: float  # how long a 503 or a failing /health lasts
    hang_s: float  # how long a backend stays stopped (SIGSTOP)
    sync_s: float  # the sync agent's pass (its active health check)


# The long form keeps the default sync interval (edge.sync_interval_s, 10 s): a hang is found
# by the active health check as it is by default.
LONG = Timing(before_s=5, after_s=30, hold_s=20, hang_s=20, sync_s=10)
# The short hang outlasts the model servers' idle timeout (5 s), so the backend resets, as it
# resumes, the keep-alive connections nginx sent requests on meanwhile, and the 10 s retry
# window the edge once had, in which those requests failed (502).
SHORT = Timing(before_s=2, after_s=9, hold_s=6, hang_s=12, sync_s=1)
AFTER_LONG_FAULT_S = 3.0  # load after a fault that outlasts after_s
RACE_S = 0.1  # a connection closed under a request this fast was idle, not refused
STALLED_S = 1.0  # a request this slow waited on something (at time_scale 0.1 they take ~0.1 s)


@dataclass
class Outcome:
    kind: str  # "stream" | "plain"
    start: float
    end: float = 0.0
    ok: bool = False
    cut: bool = False  # a stream that failed after its first token
    error: str = ""
    upstream: str = ""


@dataclass
class Row:
    fault: str
    expected: str
    requests: int = 0
    streams: int = 0
    failed: int = 0  # plain requests, and streams refused before their first token
    failed_plain: int = 0
    # Of those, refused at once with a closed connection: a request that reused an idle
    # keep-alive connection just as nginx reloaded (the sync agent's pass that takes a backend
    # out or lets it back) and the old worker closed it. The OpenAI SDKs retry these by default.
    reload_races: int = 0
    streams_cut: int = 0
    stalled: int = 0  # answered, but after more than STALLED_S
    recovered_s: float = 0.0  # from the fault to the start of the last failed request
    # A backend taken out (hung, or its /health failing): its last new request after the fault.
    last_to_hung_s: float | None = None
    keys_kept: bool | None = None
    counter_kept: bool | None = None
    errors: dict[str, int] = field(default_factory=dict)
    # What nginx logged as upstream errors during the row (its error log), by message: e.g.
    # connections a resumed backend reset; a request still answered if nginx retried it.
    upstream_errors: dict[str, int] = field(default_factory=dict)
    # The first failures: kind, seconds from the fault to its start and to its end, error.
    failures: list[tuple[str, float, float, str]] = field(default_factory=list)
    held: bool = False
    note: str = ""


# -- the load ---------------------------------------------------------------------------


class Load:
    """Workers that send streams and plain requests in turn until stopped."""

    def __init__(self, endpoint: str, key: str, model: str) -> None:
        self.client = openai.AsyncOpenAI(base_url=endpoint + "/v1", api_key=key,
                                         max_retries=0, timeout=REQUEST_TIMEOUT_S)
        self.model = model
        self.outcomes: list[Outcome] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(n) for n in range(CONCURRENCY)))

    async def _worker(self, n: int) -> None:
        stream = n % 2 == 0
        while not self.stopping.is_set():
            outcome = Outcome("stream" if stream else "plain", time.monotonic())
            self.outcomes.append(outcome)
            try:
                await (self._stream(outcome) if stream else self._plain(outcome))
                outcome.ok = True
            except openai.APIStatusError as error:
                outcome.error = f"{error.status_code}"
            except openai.APIError as error:
                outcome.error = type(error).__name__
            except Exception as error:  # a stream cut mid-way surfaces as the transport's error
                outcome.error = type(error).__name__
            outcome.end = time.monotonic()
            stream = not stream

    async def _plain(self, outcome: Outcome) -> None:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=self.model, messages=[{"role": "user", "content": "hello"}],
            max_tokens=PLAIN_TOKENS)
        outcome.upstream = raw.headers.get("x-llmfleet-upstream", "")
        completion = raw.parse()
        if not completion.choices:
            raise RuntimeError("no choices")

    async def _stream(self, outcome: Outcome) -> None:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=self.model, messages=[{"role": "user", "content": "hello"}],
            max_tokens=STREAM_TOKENS, stream=True)
        outcome.upstream = raw.headers.get("x-llmfleet-upstream", "")
        stream = raw.parse()
        chunks = 0
        try:
            async for _ in stream:
                chunks += 1
        except BaseException:
            outcome.cut = chunks > 0
            raise
        if chunks == 0:
            raise RuntimeError("empty stream")


# -- the faults -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    expected: str
    inject: Callable[[dict[str, Any], Timing], Awaitable[None]]
    check: Callable[[Row, Timing], bool]
    hung_backend: bool = False
    lasts: Callable[[Timing], float] = lambda timing: timing.hold_s


def pid_of(box: dict[str, Any], name: str) -> int:
    for backend in status(Path(box["state_dir"])).backends:
        if backend.name == name:
            return backend.pid
    service = status(Path(box["state_dir"])).service(name)
    assert service is not None, name
    return service.pid


def kill(name: str) -> Callable[[dict[str, Any], Timing], Awaitable[None]]:
    async def inject(box: dict[str, Any], _: Timing) -> None:
        os.kill(pid_of(box, name), signal.SIGKILL)
    return inject


async def kill_nginx_worker(box: dict[str, Any], _: Timing) -> None:
    master = pid_of(box, "nginx")
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)


async def hang_backend(box: dict[str, Any], timing: Timing) -> None:
    pid = pid_of(box, "backend-1")
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(timing.hang_s)
    finally:
        os.kill(pid, signal.SIGCONT)


def backend_fault(mode: str) -> Callable[[dict[str, Any], Timing], Awaitable[None]]:
    """The simulated backend's fault `mode` on the first backend for the hold, then none."""
    async def inject(box: dict[str, Any], timing: Timing) -> None:
        url = box["backends"][0]["url"] + "/_sim/fault"
        set_fault(url, {"mode": mode})
        try:
            await asyncio.sleep(timing.hold_s)
        finally:
            set_fault(url, {"mode": "none"})
    return inject


def set_fault(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


FAULTS = [
    Fault("backend killed", "plain requests never fail (the edge retries them); only streams "
          "on the killed backend are cut", kill("backend-1"),
          lambda r, t: r.failed_plain == 0 and r.reload_races <= 2),
    Fault("gateway killed", "requests fail (503) only until the gateway is back, within 2 s",
          kill("gateway"), lambda r, t: r.recovered_s <= 2.0),
    Fault("redis killed", "nothing fails (paid fails open); keys and counters kept (AOF)",
          kill("redis"), lambda r, t: r.failed == 0 and bool(r.keys_kept)
          and bool(r.counter_kept)),
    Fault("nginx worker killed", "only requests on that worker fail; the master replaces it",
          kill_nginx_worker, lambda r, t: r.recovered_s <= 1.0),
    Fault("prometheus killed", "traffic does not notice", kill("prometheus"),
          lambda r, t: r.failed == 0 and r.streams_cut == 0),
    Fault("backend hung (SIGSTOP)", "no new request reaches it after one health-check pass; "
          "nothing fails but reload races", hang_backend,
          lambda r, t: r.failed == r.reload_races <= 2
          and (r.last_to_hung_s or 0) <= t.sync_s + HEALTH_TIMEOUT_S + 1.0,
          hung_backend=True, lasts=lambda timing: timing.hang_s),
    Fault("backend answers 503", "nothing fails (the edge retries on the other backend) but "
          "reload races", backend_fault("unavailable"),
          lambda r, t: r.failed == r.reload_races <= 2 and r.streams_cut == 0),
    Fault("backend /health fails, still serving", "no new request reaches it after one "
          "health-check pass; what it runs finishes; nothing fails but reload races",
          backend_fault("unhealthy"),
          lambda r, t: r.failed == r.reload_races <= 2 and r.streams_cut == 0
          and (r.last_to_hung_s or 0) <= t.sync_s + HEALTH_TIMEOUT_S + 1.0,
          hung_backend=True),
]


# -- one run ----------------------------------------------------------------------------


async def run_fault(box: dict[str, Any], fault: Fault, timing: Timing, load_key: str,
                    counter_key: str, model: str) -> Row:
    row = Row(fault.name, fault.expected)
    state_dir = Path(box["state_dir"])
    keys_before = len(key_store(state_dir).list())
    counter_before = remaining(box, counter_key)
    error_log = state_dir / "nginx" / "error.log"
    logged = error_log.stat().st_size if error_log.exists() else 0
    load = Load(box["endpoint"], load_key, model)
    runner = asyncio.create_task(load.run())
    await asyncio.sleep(timing.before_s)
    fault_at = time.monotonic()
    hung_upstream = box["backends"][0]["url"].removeprefix("http://")
    injecting = asyncio.create_task(fault.inject(box, timing))
    await asyncio.sleep(timing.after_s)
    if not injecting.done():  # a fault longer than the window: the load goes on after it
        await injecting
        await asyncio.sleep(AFTER_LONG_FAULT_S)
    await injecting
    load.stopping.set()
    await runner
    await load.client.close()

    after = [o for o in load.outcomes if o.start >= fault_at - 1]
    row.requests = len(load.outcomes)
    row.streams = sum(o.kind == "stream" for o in load.outcomes)
    failed = [o for o in load.outcomes if not o.ok]
    row.failed = sum(not o.cut for o in failed)
    row.failed_plain = sum(o.kind == "plain" and not _reload_race(o) for o in failed)
    row.reload_races = sum(_reload_race(o) for o in failed)
    row.streams_cut = sum(o.cut for o in failed)
    row.stalled = sum(o.ok and o.end - o.start > STALLED_S for o in load.outcomes)
    for outcome in failed:
        label = ("cut " if outcome.cut else "") + (outcome.error or "?")
        row.errors[label] = row.errors.get(label, 0) + 1
    if failed:
        row.recovered_s = max(0.0, max(o.start for o in failed) - fault_at)
    row.failures = [(o.kind + (" cut" if o.cut else ""), round(o.start - fault_at, 3),
                     round(o.end - fault_at, 3), o.error) for o in failed[:20]]
    if fault.hung_backend:
        # New requests it took while hung (after SIGCONT it may take them again).
        taken = [o.start - fault_at for o in after if hung_upstream in o.upstream
                 and fault_at <= o.start < fault_at + fault.lasts(timing)]
        row.last_to_hung_s = max(taken, default=0.0)
    row.upstream_errors = upstream_errors(error_log, logged)
    whole_again(box)
    row.keys_kept = len(key_store(state_dir).list()) == keys_before
    row.counter_kept = remaining(box, counter_key) == counter_before - 1
    row.held = fault.check(row, timing)
    return row


UPSTREAM_ERROR = re.compile(r"\[error\] \d+#\d+: \*\d+ (.+?), client: .*? upstream: ")


def upstream_errors(error_log: Path, offset: int) -> dict[str, int]:
    """nginx's upstream errors logged past `offset`, by message ("recv() failed (104:
    Connection reset by peer) while reading response header from upstream", ...)."""
    if not error_log.exists():
        return {}
    with error_log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    counts: dict[str, int] = {}
    for match in UPSTREAM_ERROR.finditer(text):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def _reload_race(outcome: Outcome) -> bool:
    return (not outcome.cut and outcome.error == "APIConnectionError"
            and outcome.end - outcome.start < RACE_S)


def remaining(box: dict[str, Any], key: str) -> int:
    """One request with the counter key: how many it has left in its window."""
    request = urllib.request.Request(box["endpoint"] + "/v1/models",
                                     headers={"Authorization": f"Bearer {key}"})
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.headers["x-ratelimit-remaining-requests"])
        except (OSError, KeyError, TypeError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def whole_again(box: dict[str, Any], timeout_s: float = 60) -> None:
    """Every process running and healthy, and the edge sees every backend ready."""
    state_dir = Path(box["state_dir"])

    def whole() -> bool:
        report = status(state_dir)
        processes = [*report.backends, *report.services.values()]
        return (all(p.running and p.healthy for p in processes)
                and all(b.state.value == "ready" for b in report.backends))

    if not wait_until(whole, timeout_s, interval_s=0.2):
        raise RuntimeError("the sandbox did not recover; see its logs in " + str(state_dir))


async def matrix(timing: Timing, only: list[str], keep_logs: Path | None = None) -> list[Row]:
    config = validate({
        "rate_limits": {"tiers": TIERS, "redis_retry_s": 0.5},
        "edge": {"sync_interval_s": timing.sync_s},
        "sandbox": {"backends": 2, "time_scale": 0.1, "max_num_seqs": 64, **{
            k: free_port() for k in ("edge_port", "base_port", "redis_port",
                                     "gateway_port")}},
    }, "faults")
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmfleet-faults-") as folder:
        state_dir = Path(folder)
        try:
            box = up(config, state_dir, edge_port_explicit=True).to_json()
            store = key_store(state_dir)
            load_key, _ = store.create("load", "paid")
            counter_key, _ = store.create("counter", "paid")
            model = json.loads(urllib.request.urlopen(urllib.request.Request(
                box["endpoint"] + "/v1/models",
                headers={"Authorization": f"Bearer {load_key}"}), timeout=10).read()
            )["data"][0]["id"]
            for fault in FAULTS:
                if only and fault.name not in only:
                    continue
                say(f"{fault.name}: {timing.before_s:g} s of load, the fault, "
                    f"{timing.after_s:g} s more")
                rows.append(await run_fault(box, fault, timing, load_key, counter_key, model))
        finally:
            down(state_dir)
            if keep_logs:
                for log in state_dir.rglob("*.log"):
                    kept = keep_logs / log.relative_to(state_dir)
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(log, kept)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| fault | expected | requests (streams) | failed (reload races) | streams cut "
             "| stalled > 1 s "
             "| every request succeeds again after | keys, counters kept | held |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        recovered = f"{r.recovered_s:.2f} s" if r.failed or r.streams_cut else "-"
        if r.last_to_hung_s is not None:
            recovered += f"; its last new request {r.last_to_hung_s:.2f} s into the fault"
        kept = f"{'yes' if r.keys_kept else 'NO'}, {'yes' if r.counter_kept else 'NO'}"
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items()))
        lines.append(f"| {r.fault} | {r.expected} | {r.requests} ({r.streams}) | {r.failed} "
                     f"({r.reload_races}){f'; {errors}' if errors else ''} | {r.streams_cut} | "
                     f"{r.stalled} | "
                     f"{recovered} | "
                     f"{kept} | {'yes' if r.held else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="short windows (the test's)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", nargs="*", default=[], help="fault names to run")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy the sandbox's logs (nginx's error log among them) here")
    args = parser.parse_args()
    timing = SHORT if args.short else LONG
    rows = asyncio.run(matrix(timing, args.only, args.keep_logs))
    if args.json:
        print(json.dumps({"timing": asdict(timing), "rows": [asdict(r) for r in rows]},
                         indent=2))
    else:
        print(table(rows))
        for r in rows:
            for message, count in sorted(r.upstream_errors.items()):
                print(f"{r.fault}: nginx logged {count} x {message}")
        medians = statistics.median(r.requests for r in rows) if rows else 0
        print(f"\n{len(rows)} faults, about {medians:.0f} requests each; timing {timing}")
    return 0 if all(r.held for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
