"""What API keys and rate limits cost at the edge, measured side by side in one run.

1. Through the edge with the gateway against without it: median and P99 latency of a cheap
   request (GET /v1/models) sent open-loop at 100 and 500 requests/s. Goal: the gateway adds
   at most 1 ms to the median and 5 ms to P99 at 500 requests/s.
2. Gateway decisions/s at saturation (GET /auth straight to the gateway), against the same
   client on the gateway's /health, which decides nothing.
3. The seed's INCR + EXPIRE against our limiter's single EVALSHA: round trips and time per
   decision on the same Redis.

    .venv/bin/python bench/gateway.py [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
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
    parser.add_argument("--seconds", type=float, default=6.0, help="per open-loop measurement")
    args = parser.parse_args()
    tiers = {"bench": {"requests": 10_000_000, "window_s": 60}, "enterprise": {
        "requests": "unlimited"}}
    backends = {"backends": 1, "time_scale": 0.01}
    with sandbox(sandbox={**backends, "auth": False}) as bare, \
            sandbox(sandbox={**backends, "auth": True}, rate_limits={"tiers": tiers}) as guarded:
        store = key_store(Path(guarded["state_dir"]), guarded)
        key, _ = store.create("bench", "bench")
        for rate in (100, 500):
            runs = {}
            for name, box, api_key in (("without", bare, None), ("gateway", guarded, key),
                                       ("without", bare, None), ("gateway", guarded, key)):
                say(f"{rate}/s {name}")
                latencies = asyncio.run(open_loop(box["endpoint"] + "/v1/models", api_key,
                                                  rate, args.seconds / 2))
                runs.setdefault(name, []).extend(latencies)
            base, gated = runs["without"], runs["gateway"]
            print(f"\nGET /v1/models open-loop at {rate}/s ({len(base)} and {len(gated)} "
                  "requests)")
            print(f"  {'ms':<12} {'without':>9} {'gateway':>9} {'added':>9} {'ratio':>6}")
            for label, q in (("p50", 50), ("p99", 99)):
                b, g = percentile(base, q), percentile(gated, q)
                print(f"  {label:<12} {ms(b)} {ms(g)} {ms(g - b)} {ratio(g, b)}")

        gateway_url = guarded["gateway"]["url"]
        say("gateway at saturation")
        health = asyncio.run(saturate(gateway_url + "/health", {}, args.seconds))
        decisions = asyncio.run(saturate(gateway_url + "/auth",
                                         {"Authorization": f"Bearer {key}"}, args.seconds))
        print("\ngateway at saturation (64 clients, one Python client process)")
        print(f"  /health {health:9.0f}/s   /auth {decisions:9.0f} decisions/s   "
              f"ratio {ratio(decisions, health)}")
        limiter_round_trips(store.redis, key,
                            {name: Tier(**spec) for name, spec in tiers.items()}, 5000)


if __name__ == "__main__":
    main()
