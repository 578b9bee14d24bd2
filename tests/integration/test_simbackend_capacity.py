"""2,000 concurrent streams against one real backend process: all complete, memory is measured.

The streams are held open together by a `slow` fault with a huge factor while they connect (the
engine's first step then lasts minutes), so every one of them is provably open at the same time
(running + waiting == 2000) when RSS is read; lifting the fault re-times that step at once and the
fleet of streams drains at the fast time scale.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.local.simbackend import parse_access_log_line

STREAMS = 2000
TOKENS = 20
WARMUP = 50
MODEL = "capacity-model"
STARTUP_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+) pid=(\d+)")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB, from /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def ensure_open_files(needed: int) -> None:
    """This process holds one socket per stream too: lift its soft limit, or fail saying how
    (Debian's and Ubuntu's hard limit is far above it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"this test holds {needed} sockets, but the hard limit on open files is "
                    f"{hard}: raise it (e.g. 'ulimit -Hn {needed}' as root, or nofile in "
                    "/etc/security/limits.conf) and run again")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def one_stream(session: aiohttp.ClientSession, url: str) -> tuple[int, bool]:
    """(content chunks, saw [DONE]) of one streaming chat completion."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a story about spot GPUs."}],
        "max_tokens": TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks, done, usage = 0, False, None
    async with session.post(url, json=body) as response:
        assert response.status == 200
        async for raw in response.content:
            line = raw.strip()
            if not line:
                continue
            assert line.startswith(b"data: ")
            payload = line[len(b"data: ") :]
            if payload == b"[DONE]":
                done = True
                continue
            event = json.loads(payload)
            if not event["choices"]:
                usage = event["usage"]
            elif "role" not in event["choices"][0]["delta"]:
                chunks += 1  # a content chunk (the first chunk only carries the role)
    assert usage is not None and usage["completion_tokens"] == TOKENS
    return chunks, done


async def run_load(base: str, pid: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=STREAMS + 100)
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def stats() -> dict[str, Any]:
            async with session.get(f"{base}/_sim/stats") as r:
                return await r.json()

        async def fault(**body: Any) -> None:
            async with session.post(f"{base}/_sim/fault", json=body) as r:
                assert r.status == 200

        url = f"{base}/v1/chat/completions"
        warm = await asyncio.gather(*(one_stream(session, url) for _ in range(WARMUP)))
        assert warm == [(TOKENS, True)] * WARMUP
        idle = rss_kib(pid)

        await fault(mode="slow", factor=1_000_000)
        opened = time.monotonic()
        tasks = [asyncio.create_task(one_stream(session, url)) for _ in range(STREAMS)]

        async def all_open() -> bool:
            s = await stats()
            return s["running"] + s["waiting"] == STREAMS and s["open_streams"] == STREAMS

        await wait_until(all_open, timeout=45, what=f"{STREAMS} streams open at once")
        open_s = time.monotonic() - opened
        peak = rss_kib(pid)
        at_peak = await stats()

        drain_started = time.monotonic()
        await fault(mode="none")
        results = await asyncio.gather(*tasks)
        drain_s = time.monotonic() - drain_started
        final = await stats()
    return {
        "idle": idle,
        "peak": peak,
        "at_peak": at_peak,
        "results": results,
        "final": final,
        "open_s": open_s,
        "drain_s": drain_s,
    }


def test_two_thousand_concurrent_streams(tmp_path: Path) -> None:
    ensure_open_files(STREAMS + 500)
    log = tmp_path / "backend.log"
    command = [
        sys.executable, "-m", "llmfleet.local.simbackend",
        "--host", "127.0.0.1", "--port", "0",
        "--model", "org/capacity-8b", "--served-model-name", MODEL,
        "--max-model-len", "4096", "--preset", "l4", "--max-num-seqs", "256",
        "--name", "capacity", "--seed", "0", "--time-scale", "0.01",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while (match := STARTUP_RE.search(log.read_text())) is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "backend did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{match.group(1)}"
        report = asyncio.run(run_load(base, proc.pid))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 0, log.read_text()[-2000:]

    assert report["results"] == [(TOKENS, True)] * STREAMS
    assert report["at_peak"]["running"] >= 1
    final = report["final"]
    assert (final["running"], final["waiting"], final["open_streams"]) == (0, 0, 0)
    assert final["finished"] == {"stop": 0, "length": STREAMS + WARMUP, "abort": 0}

    records = [r for r in map(parse_access_log_line, log.read_text().splitlines()) if r]
    completions = [r for r in records if r["path"] == "/v1/chat/completions"]
    assert len(completions) == STREAMS + WARMUP
    assert all(r["status"] == 200 and r["completion_tokens"] == TOKENS for r in completions)

    per_stream = (report["peak"] - report["idle"]) / STREAMS
    print(
        f"\nsimbackend capacity: {STREAMS} streams open in {report['open_s']:.1f}s, "
        f"drained in {report['drain_s']:.1f}s; RSS idle {report['idle'] / 1024:.1f} MiB, "
        f"peak {report['peak'] / 1024:.1f} MiB, {per_stream:.1f} KiB per open stream"
    )
    # A regression guard, not a target: a leak or a per-stream buffer blow-up trips it.
    assert per_stream < 100
