"""What holding every key record costs a gateway: memory per key, and the time to load them all.

1. Memory: N key records (default 100,000; one client per 10 keys, 1 in 20 with a per-key
   override, as Redis returns them) put into a gateway's table, measured with tracemalloc
   (every byte Python allocated for the table), and, in a second pass without tracemalloc
   (which has a large overhead of its own), as the growth of the process's resident size.
   Goal: 100,000 keys in under 50 MB per gateway.
2. Loading: the same N keys written to a throwaway redis-server (passwordless, loopback, no
   persistence), then `Gateway.load_keys()` timed: the first load (the gateway does it before
   it serves, then freezes the records out of the garbage collector's full passes, as here),
   and a resync of a full table (after a lost connection, and every RESYNC_S), with the
   longest pause it causes in the event loop (what a decision would wait behind it), measured
   by a probe every 1 ms.

    .venv/bin/python bench/key_table.py [--keys N] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import shutil
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import redis
import redis.asyncio as aioredis
from common import say

from llmfleet.config import RateLimits
from llmfleet.gateway.keys import INDEX, RECORD, digest
from llmfleet.gateway.server import Gateway
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until


def records(n: int) -> list[tuple[str, dict[bytes, bytes]]]:
    """N key records as HGETALL returns them: bytes, the fields `keys create` writes."""
    made = []
    for i in range(n):
        raw = "sk-lf-" + secrets.token_urlsafe(32)
        fields = {b"client": f"client-{i // 10:06d}".encode(), b"tier": b"paid",
                  b"created": repr(time.time()).encode(), b"revoked": b"0",
                  b"hint": raw[:10].encode() + b"..."}
        if i % 20 == 0:
            fields[b"requests"] = b"120"
        made.append((digest(raw), fields))
    return made


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def gateway(port: int = 1) -> Gateway:
    return Gateway(RateLimits(), aioredis.Redis(port=port, socket_timeout=2), 360)


def fill(subject: Gateway, made: list[tuple[str, dict[bytes, bytes]]]) -> None:
    for key_digest, fields in made:
        # The digest as a fresh string, as the load makes it from Redis's reply.
        subject._remember(bytes(key_digest, "ascii").decode(), fields, time.monotonic())


def measure_memory(n: int) -> None:
    made = records(n)
    subject = gateway()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    fill(subject, made)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    traced = sum(s.size_diff for s in after.compare_to(before, "filename"))
    subject = gateway()
    gc.collect()
    rss_before = rss_bytes()
    fill(subject, made)
    gc.collect()
    rss = rss_bytes() - rss_before
    print(f"{n:,} key records held by one gateway:")
    print(f"  allocated by Python (tracemalloc) {traced / 2**20:7.1f} MB  "
          f"{traced / n:6.0f} bytes a key")
    print(f"  resident size grew by             {rss / 2**20:7.1f} MB  {rss / n:6.0f} bytes a key")
    print(f"  goal: 100,000 keys under 50 MB: {100_000 * max(traced, rss) / n / 2**20:.1f} MB "
          "at this rate")


def measure_load(n: int) -> None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llmfleet-bench-") as folder:
        server = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            assert wait_until(lambda: _pings(client), 10), "redis-server did not start"
            say(f"writing {n:,} key records")
            with client.pipeline(transaction=False) as pipe:
                for i, (key_digest, fields) in enumerate(records(n)):
                    pipe.hset(RECORD + key_digest, mapping=fields)
                    pipe.sadd(INDEX, key_digest)
                    if i % 5000 == 4999:
                        pipe.execute()
                pipe.execute()
            asyncio.run(_timed_loads(port, n))
        finally:
            server.kill()
            server.wait()


async def _timed_loads(port: int, n: int) -> None:
    subject = gateway(port)
    for label in ("first load (empty table)", "resync (table full)"):
        if label.startswith("resync"):
            gc.freeze()  # as the gateway does once it has loaded every key
        pauses: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(_probe(stop, pauses))
        started = time.perf_counter()
        loaded = await subject.load_keys()
        took = time.perf_counter() - started
        stop.set()
        await prober
        pauses.sort()
        p99 = pauses[int(len(pauses) * 0.99)]
        print(f"{label}: {loaded:,} records in {took:.2f} s; pauses of the event loop: "
              f"P99 {p99 * 1000:.1f} ms, longest {pauses[-1] * 1000:.1f} ms")
    await subject.redis.aclose()


async def _probe(stop: asyncio.Event, pauses: list[float]) -> None:
    """How much later than asked each 1 ms sleep ends: the event loop's pauses."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        pauses.append(loop.time() - before - 0.001)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--no-redis", action="store_true", help="memory only")
    args = parser.parse_args()
    measure_memory(args.keys)
    if not args.no_redis:
        measure_load(args.keys)


if __name__ == "__main__":
    main()
