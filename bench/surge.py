"""Surge: N clients at the same moment, through the edge with an API key and straight to the
backends, on a cold edge (a freshly started sandbox) and a warm one (right after a first burst).

Each burst size, client and path gets a fresh sandbox (4 simulated backends with room for 512
sequences each, API keys on, monitoring off) and two identical bursts: the first is the cold
row, the second the warm one. `hey` sends non-streaming requests (a client from outside the
project); the project's load generator sends streams, without retries, so a refused connection
counts. The direct path splits the same N across the backends' own ports, as the baseline.

Per burst: status counts (`conn` = no HTTP answer at all), time to first token and end to end
(median and P99 of the answered requests), seconds from the burst until its last answer, the
peak file descriptors and resident memory that nginx and the gateway gained, per request of
the burst (read from /proc), the deepest the accept queues of the edge and of the busiest
backend got (sampled every 50 ms, so a lower bound), and the SYNs the kernel dropped on full
accept queues during the burst (a machine-wide counter: other work on the machine adds to it).

    .venv/bin/python bench/surge.py [--sizes 1000 2000 5000] [--repeat 2] [--tokens 16] [--cap N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import statistics
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import sandbox, say

from llmfleet.local.loadgen import LoadSpec, percentile, run_load
from llmfleet.local.sandbox.auth import key_store

SANDBOX = {"backends": 4, "max_num_seqs": 512, "auth": True}
BURST_TIMEOUT_S = 240  # every burst stops by then, answered or not
SAMPLE_EVERY_S = 0.05


@dataclass
class Burst:
    """What one burst got back."""

    statuses: Counter[str]
    ttft_s: list[float]  # answered requests only
    e2e_s: list[float]
    last_answer_s: float
    load: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> fds, KiB per req
    queues: dict[str, int] = field(default_factory=dict)  # listener -> deepest accept queue
    syn_drops: int = 0


@dataclass
class Row:
    size: int
    client: str
    path: str
    state: str  # cold | warm
    burst: Burst


def tree(pid: int) -> list[int]:
    """A process and all its descendants (nginx's workers, the gateway's children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(child) for child in children]
    return found


def usage(pids: list[int]) -> tuple[int, int]:
    """Open file descriptors and resident KiB, summed over processes that still exist."""
    fds = rss = 0
    for pid in pids:
        try:
            fds += len(list(Path(f"/proc/{pid}/fd").iterdir()))
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss += next(int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("VmRSS:"))
    return fds, rss


def accept_queues(ports: dict[int, str]) -> dict[str, int]:
    """Connections waiting in the accept queue of each listening port named in `ports`."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=False).stdout
    queues: dict[str, int] = {}
    for line in out.splitlines():
        fields = line.split()
        name = ports.get(int(fields[3].rsplit(":", 1)[1]))
        if name:
            queues[name] = max(queues.get(name, 0), int(fields[1]))  # Recv-Q of a listener
    return queues


class Sampler:
    """Peak descriptors and memory of some process trees while a burst runs, above what they
    held just before it; and the deepest accept queue of some listening ports."""

    def __init__(self, roots: dict[str, int], ports: dict[int, str]) -> None:
        self.trees = {name: tree(pid) for name, pid in roots.items()}
        self.base = {name: usage(pids) for name, pids in self.trees.items()}
        self.peak = dict(self.base)
        self.ports = ports
        self.queues: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            for name, pids in self.trees.items():
                fds, rss = usage(pids)
                old_fds, old_rss = self.peak[name]
                self.peak[name] = (max(fds, old_fds), max(rss, old_rss))
            for name, depth in accept_queues(self.ports).items():
                self.queues[name] = max(self.queues[name], depth)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def per_request(self, requests: int) -> dict[str, tuple[float, float]]:
        return {name: ((self.peak[name][0] - self.base[name][0]) / requests,
                       (self.peak[name][1] - self.base[name][1]) / requests)
                for name in self.trees}


def listen_overflows() -> int:
    """SYNs dropped because an accept queue was full, since boot (all sockets)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def split(total: int, urls: list[str]) -> list[tuple[str, int]]:
    """`total` requests shared as evenly as possible over `urls`."""
    share, extra = divmod(total, len(urls))
    return [(url, share + (i < extra)) for i, url in enumerate(urls) if share + (i < extra)]


def hey_burst(targets: list[tuple[str, int]], body: str, key: str | None) -> Burst:
    """One `hey` per target, all started together; each sends its count at once."""
    header = ["-H", f"Authorization: Bearer {key}"] if key else []
    procs = [
        (count, subprocess.Popen(
            ["hey", "-n", str(count), "-c", str(count), "-m", "POST", "-T", "application/json",
             "-d", body, *header, "-t", str(BURST_TIMEOUT_S - 30), "-o", "csv",
             url + "/v1/chat/completions"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for url, count in targets
    ]
    statuses: Counter[str] = Counter()
    ttft, e2e, last = [], [], 0.0
    try:
        for count, proc in procs:
            out, _ = proc.communicate(timeout=BURST_TIMEOUT_S)
            rows = list(csv.DictReader(io.StringIO(out)))
            # hey leaves requests without an HTTP answer (reset, timeout) out of its CSV.
            statuses["conn"] += count - len(rows)
            for row in rows:
                total = float(row["response-time"])
                statuses[row["status-code"]] += 1
                last = max(last, float(row["offset"]) + total)
                if row["status-code"].startswith("2"):
                    e2e.append(total)
                    ttft.append(total - float(row["Response-read"]))
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Burst(+statuses, ttft, e2e, last)


def stream_burst(targets: list[tuple[str, int]], model: str, tokens: int,
                 key: str | None) -> Burst:
    """The load generator's streams, all targets in one event loop, each count at once."""

    async def run() -> list:
        return await asyncio.gather(*(run_load(LoadSpec(
            url=url, model=model, requests=count, concurrency=count, stream=True,
            output_tokens=f"fixed:{tokens}", prompt_tokens="fixed:16", api_key=key,
            max_retries=0, timeout_s=BURST_TIMEOUT_S - 30, max_duration_s=BURST_TIMEOUT_S))
            for url, count in targets))

    records = [record for report in asyncio.run(run()) for record in report.records]
    ok = [r for r in records if r.ok]
    statuses = Counter(str(r.status) for r in records)
    for (status, error), count in Counter(
            (str(r.status), r.error) for r in records if not r.ok).most_common(3):
        say(f"  {count} x {status}: {error}")
    return Burst(statuses, [r.ttft_s for r in ok if r.ttft_s is not None],
                 [r.latency_s for r in ok], max((r.start_s + r.latency_s for r in records),
                                                default=0.0))


def served_model(backend_url: str) -> str:
    """The model name, asked of a backend so the edge sees no request before the burst."""
    with urllib.request.urlopen(backend_url + "/v1/models", timeout=10) as resp:
        return json.load(resp)["data"][0]["id"]


def bursts(size: int, client: str, path: str, tokens: int, cap: int | None) -> Iterator[Row]:
    """A fresh sandbox, then the same burst twice: cold, then warm. With `cap`, each backend
    holds at most that many requests and the rest wait in the edge's queue (the direct path has
    no such cap: it is the baseline)."""
    balancing = ({"max_requests_per_node": cap, "queue_timeout_s": BURST_TIMEOUT_S / 2,
                  "queue_depth": 10_000} if cap else {})
    with sandbox(sandbox=SANDBOX, load_balancing=balancing) as box:
        backends = [b["url"] for b in box["backends"]]
        model = served_model(backends[0])
        key = None
        if path == "edge":
            key, _ = key_store(Path(box["state_dir"])).create("surge", "enterprise")
        targets = split(size, [box["endpoint"]] if path == "edge" else backends)
        roots = {"nginx": box["nginx"]["pid"], "gateway": box["gateway"]["pid"]}
        ports = {int(url.rsplit(":", 1)[1]): "backend" for url in backends}
        ports[int(box["endpoint"].rsplit(":", 1)[1])] = "edge"
        body = json.dumps({"model": model, "max_tokens": tokens,
                           "messages": [{"role": "user", "content": "Explain photosynthesis."}]})
        for state in ("cold", "warm"):
            say(f"{size} {client} {path} {state}")
            drops = listen_overflows()
            with Sampler(roots, ports) as sampler:
                if client == "hey":
                    burst = hey_burst(targets, body, key)
                else:
                    burst = stream_burst(targets, model, tokens, key)
            burst.syn_drops = listen_overflows() - drops
            burst.queues = dict(sampler.queues)
            if path == "edge":
                burst.load = sampler.per_request(size)
            yield Row(size, client, path, state, burst)


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:8.0f}" if values else f"{'-':>8}"


def per_request(burst: Burst, name: str) -> str:
    if name not in burst.load:
        return f"{'-':>5} {'-':>6}"
    fds, kib = burst.load[name]
    return f"{fds:5.2f} {kib:6.1f}"


HEADER = (f"{'N':>5} {'client':<7} {'path':<6} {'edge':<4}  {'ok':>5} {'other':<22} "
          f"{'ttft50':>8} {'ttft99':>8} {'e2e50':>8} {'e2e99':>8} {'last s':>6}  "
          f"{'nginx fd/KiB':>12}  {'gw fd/KiB':>12} {'queue edge/be':>13} {'SYNdrop':>7}")


def line(row: Row) -> str:
    b = row.burst
    ok = sum(n for status, n in b.statuses.items() if status.startswith("2"))
    other = " ".join(f"{s}:{n}" for s, n in sorted(b.statuses.items())
                     if not s.startswith("2")) or "-"
    return (f"{row.size:>5} {row.client:<7} {row.path:<6} {row.state:<4}  {ok:>5} {other:<22} "
            f"{ms(b.ttft_s, 50)} {ms(b.ttft_s, 99)} {ms(b.e2e_s, 50)} {ms(b.e2e_s, 99)} "
            f"{b.last_answer_s:6.1f}  {per_request(b, 'nginx')}  {per_request(b, 'gateway')} "
            f"{b.queues.get('edge', 0):>6}/{b.queues.get('backend', 0):<6} {b.syn_drops:>7}")


def spread(rows: list[Row]) -> list[str]:
    """Per setting over the repeats: answered share, and the median (min-max) of P99 end to
    end and of the time until the last answer."""
    groups: dict[tuple, list[Burst]] = {}
    for row in rows:
        groups.setdefault((row.size, row.client, row.path, row.state), []).append(row.burst)
    out = [f"{'N':>5} {'client':<7} {'path':<6} {'edge':<4}  {'runs':>4} {'ok':>12}  "
           f"{'e2e p99 ms, median (min-max)':<30} last answer s, median (min-max)"]
    for (size, client, path, state), group in groups.items():
        ok = sum(n for b in group for s, n in b.statuses.items() if s.startswith("2"))
        p99 = [percentile(b.e2e_s, 99) * 1000 for b in group if b.e2e_s]
        last = [b.last_answer_s for b in group]
        out.append(f"{size:>5} {client:<7} {path:<6} {state:<4}  {len(group):>4} "
                   f"{ok:>6}/{size * len(group):<5}  {summary(p99, '.0f'):<30} "
                   f"{summary(last, '.1f')}")
    return out


def summary(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000],
                        help="simultaneous requests per burst (at most 10000)")
    parser.add_argument("--repeat", type=int, default=2, help="fresh sandboxes per setting")
    parser.add_argument("--tokens", type=int, default=16, help="output tokens per request")
    parser.add_argument("--clients", nargs="+", choices=["hey", "loadgen"],
                        default=["hey", "loadgen"])
    parser.add_argument("--cap", type=int, default=None,
                        help="load_balancing.max_requests_per_node on the edge: the rest of a "
                             "burst waits in the edge's queue (default: no cap)")
    args = parser.parse_args()
    if not all(1 <= size <= 10_000 for size in args.sizes):
        parser.error("--sizes must be from 1 to 10000")

    rows: list[Row] = []
    started = time.monotonic()
    print(HEADER, flush=True)
    for size in args.sizes:
        for client in args.clients:
            for _ in range(args.repeat):
                # Alternate the paths so a drift in the machine's load hits both alike.
                for path in ("direct", "edge"):
                    for row in bursts(size, client, path, args.tokens, args.cap):
                        rows.append(row)
                        print(line(row), flush=True)
    print(f"\nspread over {args.repeat} fresh sandboxes per setting "
          f"({time.monotonic() - started:.0f} s in all)")
    print("\n".join(spread(rows)))


if __name__ == "__main__":
    main()
