"""What API keys and rate limits cost at the edge, measured side by side in one run.

1. An external client (hey, open-loop at 500 requests/s: 10 connections at 50/s each) on a
   cheap request (GET /v1/models), in three rounds that alternate: straight to a backend,
   through the edge without keys, through the edge with the gateway and an unlimited key (from
   the gateway's key cache), and with a limited key (one Redis round trip). Goal: the gateway
   adds at most 1 ms to the median and 3 ms to P99 over straight to the backend.
2. The same through a Python client (aiohttp), edge without keys against with the gateway, at
   100 and 500 requests/s. The client itself costs about as much as what it measures, so
   this understates the gap; it runs where hey is not installed.
3. Gateway decisions/s at saturation (GET /auth straight to the gateway), against the same
   client on the gateway's /health, which decides nothing.
4. The seed's INCR + EXPIRE against our limiter's single EVALSHA: round trips and time per
   decision on the same Redis.

    .venv/bin/python bench/gateway.py [--seconds S] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
import redis
from common import ms, ratio, sandbox, say

from llmfleet.config import Tier
from llmfleet.gateway.keys import digest
from llmfleet.gateway.limiter import ADMIT_SCRIPT, script_args, script_keys
from llmfleet.local.loadgen import percentile
from llmfleet.local.sandbox.auth import key_store


def hey(url: str, key: str | None, seconds: float) -> tuple[list[float], int]:
    """Latencies of the 200s in seconds, and the count of other answers, from one hey run at
    500 requests/s (hey paces each of its 10 connections at 50/s)."""
    command = ["hey", "-z", f"{seconds}s", "-c", "10", "-q", "50", "-o", "csv"]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True,
                            timeout=seconds + 60).stdout
    rows = list(csv.DictReader(output.splitlines()))
    latencies = [float(r["response-time"]) for r in rows if r["status-code"] == "200"]
    return latencies, len(rows) - len(latencies)


def external_client(targets: dict[str, tuple[str, str | None]], rounds: int,
                    seconds: float) -> None:
    """hey against every target in turn, `rounds` times; per round and over the rounds, each
    target's median and P99 and what it adds to the first (the direct baseline)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    for round_number in range(1, rounds + 1):
        for name, (url, key) in targets.items():
            say(f"hey round {round_number}: {name}")
            latencies, failed = hey(url + "/v1/models", key, seconds)
            if failed:
                say(f"{failed} answers other than 200 from {name}")
            runs[name].append((percentile(latencies, 50), percentile(latencies, 99)))
    baseline = next(iter(targets))
    print(f"\nGET /v1/models at 500/s from hey, {rounds} alternating rounds of {seconds:g} s")
    print(f"  {'ms':<16} {'round':>5} {'p50':>9} {'p99':>9} {'+p50':>9} {'+p99':>9}")
    for round_index in range(rounds):
        base = runs[baseline][round_index]
        for name in targets:
            p50, p99 = runs[name][round_index]
            print(f"  {name:<16} {round_index + 1:>5} {ms(p50)} {ms(p99)} "
                  f"{ms(p50 - base[0])} {ms(p99 - base[1])}")
    print(f"  over the rounds: median of each, added to {baseline} as median [min..max]")
    for name in targets:
        added = [(r[0] - b[0], r[1] - b[1]) for r, b in zip(runs[name], runs[baseline],
                                                             strict=True)]
        p50 = statistics.median(r[0] for r in runs[name])
        p99 = statistics.median(r[1] for r in runs[name])
        base50 = statistics.median(r[0] for r in runs[baseline])
        print(f"  {name:<16} p50 {ms(p50)} {_spread([a[0] for a in added])} "
              f"ratio {ratio(p50, base50)}   p99 {ms(p99)} {_spread([a[1] for a in added])}")


def _spread(values: list[float]) -> str:
    return (f"+{statistics.median(values) * 1000:.2f} "
            f"[{min(values) * 1000:.2f}..{max(values) * 1000:.2f}]")


async def open_loop(url: str, key: str | None, rate: float, seconds: float) -> list[float]:
    """Send at a fixed rate, whatever the answers' speed; latencies of the 200s, in seconds."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    latencies: list[float] = []
    failures = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            await response.read()
            if response.status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the arrival schedule, not synchronisation
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
    if failures:
        say(f"{failures} requests failed at {rate}/s")
    return latencies


async def saturate(url: str, headers: dict[str, str], seconds: float, clients: int = 64) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with session.get(url, headers=headers) as response:
                await response.read()
                done += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return done / (time.perf_counter() - started)


def limiter_round_trips(client: redis.Redis, key: str, tiers: dict, n: int) -> None:
    """The seed's fixed window against the sliding-window script, n decisions each."""
    seed_times, ours_times = [], []
    seed_trips = 0
    for _ in range(n):
        started = time.perf_counter()
        count = client.incr("seed:rl:bench")
        seed_trips += 1
        if count == 1:  # the seed's second command: a crash between the two leaves no expiry
            client.expire("seed:rl:bench", 60)
            seed_trips += 1
        seed_times.append(time.perf_counter() - started)
    sha = client.script_load(ADMIT_SCRIPT)
    keys = script_keys(digest(key))
    for i in range(n):
        started = time.perf_counter()
        client.evalsha(sha, 3, *keys, *script_args(f"bench-{i}", 60_000, tiers))
        ours_times.append(time.perf_counter() - started)
    print(f"\nlimiter per decision, {n} decisions each, same Redis")
    print(f"  {'':14} {'trips':>6} {'p50 ms':>9} {'p99 ms':>9}")
    for name, trips, times in (("INCR+EXPIRE", seed_trips / n, seed_times),
                               ("sliding EVALSHA", 1.0, ours_times)):
        print(f"  {name:<14} {trips:6.4f} {ms(percentile(times, 50))} "
              f"{ms(percentile(times, 99))}")
    print(f"  ratio p50 {ratio(percentile(ours_times, 50), percentile(seed_times, 50))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating hey rounds")
    args = parser.parse_args()
    tiers = {"bench": {"requests": 10_000_000, "window_s": 60}, "enterprise": {
        "requests": "unlimited"}}
    backends = {"backends": 1, "time_scale": 0.01}
    with sandbox(sandbox={**backends, "auth": False}) as bare, \
            sandbox(sandbox={**backends, "auth": True}, rate_limits={"tiers": tiers}) as guarded:
        store = key_store(Path(guarded["state_dir"]))
        key, _ = store.create("bench", "bench")
        unlimited, _ = store.create("bench", "enterprise")
        if shutil.which("hey"):
            external_client({
                "direct": (guarded["backends"][0]["url"], None),
                "edge, no keys": (bare["endpoint"], None),
                "gateway, cached": (guarded["endpoint"], unlimited),
                "gateway, Redis": (guarded["endpoint"], key),
            }, args.rounds, args.seconds)
        else:
            say("hey is not installed: no external-client measurement")
        for rate in (100, 500):
            runs = {}
            for name, box, api_key in (("without", bare, None), ("gateway", guarded, key),
                                       ("without", bare, None), ("gateway", guarded, key)):
                say(f"{rate}/s {name}")
                latencies = asyncio.run(open_loop(box["endpoint"] + "/v1/models", api_key,
                                                  rate, args.seconds / 2))
                runs.setdefault(name, []).extend(latencies)
            base, gated = runs["without"], runs["gateway"]
            print(f"\nGET /v1/models open-loop at {rate}/s from the Python client, limited key "
                  f"({len(base)} and {len(gated)} requests)")
            print(f"  {'ms':<12} {'without':>9} {'gateway':>9} {'added':>9} {'ratio':>6}")
            for label, q in (("p50", 50), ("p99", 99)):
                b, g = percentile(base, q), percentile(gated, q)
                print(f"  {label:<12} {ms(b)} {ms(g)} {ms(g - b)} {ratio(g, b)}")

        gateway_url = guarded["gateway"]["url"]
        say("gateway at saturation")
        health = asyncio.run(saturate(gateway_url + "/health", {}, args.seconds))
        decisions = asyncio.run(saturate(gateway_url + "/auth",
                                         {"Authorization": f"Bearer {key}"}, args.seconds))
        print("\ngateway at saturation (64 clients, one Python client process, limited key)")
        print(f"  /health {health:9.0f}/s   /auth {decisions:9.0f} decisions/s   "
              f"ratio {ratio(decisions, health)}")
        limiter_round_trips(store.redis, key,
                            {name: Tier(**spec) for name, spec in tiers.items()}, 5000)


if __name__ == "__main__":
    main()
