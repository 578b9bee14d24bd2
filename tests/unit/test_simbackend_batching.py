"""Continuous batching seen over HTTP: slots, the waiting queue, and disconnects freeing slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from llmfleet.local.simbackend import ServerThread, SimSettings, parse_exposition

MODEL = "batch-model"


def settings(**overrides: Any) -> SimSettings:
    base: dict[str, Any] = {
        "port": 0,
        "served_model_name": (MODEL,),
        "max_model_len": 4096,
        "prefill_ms_per_token": 0.0,
        "itl_ms": 10.0,
        "itl_ms_per_running_seq": 0.0,
        "name": "batch-test",
    }
    base.update(overrides)
    return SimSettings(**base)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    with ServerThread(settings(**getattr(request, "param", {}))) as srv:
        yield srv


def body(max_tokens: int, stream: bool = True) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "count for me"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll an async predicate until it holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def stats(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/_sim/stats") as r:
        return await r.json()


async def read_stream(response: aiohttp.ClientResponse) -> list[str]:
    """Every SSE data payload until the server ends the body."""
    events = []
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            events.append(text[len("data: ") :])
    return events


async def stream_tokens(session: aiohttp.ClientSession, base: str, max_tokens: int) -> int:
    async with session.post(f"{base}/v1/chat/completions", json=body(max_tokens)) as r:
        assert r.status == 200
        events = await read_stream(r)
    assert events[-1] == "[DONE]"
    return len(events) - 2  # minus the role chunk and [DONE]


@pytest.mark.parametrize("server", [{"max_num_seqs": 4}], indirect=True)
def test_at_most_max_num_seqs_run_and_the_rest_wait(server: ServerThread) -> None:
    base = server.base_url
    seen_running: list[int] = []

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(stream_tokens(session, base, 15)) for _ in range(10)]

            async def four_running_six_waiting() -> bool:
                s = await stats(session, base)
                seen_running.append(s["running"])
                return (s["running"], s["waiting"]) == (4, 6)

            await wait_until(four_running_six_waiting, what="4 running and 6 waiting")
            async with session.get(f"{base}/metrics") as r:
                _, _, samples = parse_exposition(await r.text())
            gauges = {s.name: s.value for s in samples}
            assert gauges["vllm:num_requests_running"] == 4
            assert gauges["vllm:num_requests_waiting"] == 6
            assert gauges["vllm:kv_cache_usage_perc"] > 0
            return await asyncio.gather(*tasks)

    counts = asyncio.run(scenario())
    assert counts == [15] * 10
    assert max(seen_running) <= 4
    final = server.call(lambda: server.backend.stats())
    assert (final["running"], final["waiting"]) == (0, 0)
    assert final["finished"]["length"] == 10


@pytest.mark.parametrize("server", [{"max_num_seqs": 1}], indirect=True)
def test_disconnected_running_stream_frees_its_slot(server: ServerThread) -> None:
    base = server.base_url

    async def scenario() -> int:
        async with aiohttp.ClientSession() as session:
            hog = await session.post(f"{base}/v1/chat/completions", json=body(1000))
            await hog.content.readline()  # the hog is running and streaming
            short = asyncio.create_task(stream_tokens(session, base, 3))

            async def queued() -> bool:
                s = await stats(session, base)
                return (s["running"], s["waiting"]) == (1, 1)

            await wait_until(queued, what="hog running, short request waiting")
            hog.close()  # client walks away mid-stream
            tokens = await asyncio.wait_for(short, timeout=10)

            async def drained() -> bool:
                s = await stats(session, base)
                return (s["running"], s["waiting"], s["finished"]["abort"]) == (0, 0, 1)

            await wait_until(drained, what="the hog aborted and nothing left")
            return tokens

    assert asyncio.run(scenario()) == 3


@pytest.mark.parametrize("server", [{"max_num_seqs": 1}], indirect=True)
def test_disconnected_waiting_request_leaves_the_queue(server: ServerThread) -> None:
    base = server.base_url

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            hog = await session.post(f"{base}/v1/chat/completions", json=body(1000))
            await hog.content.readline()
            waiter = asyncio.create_task(
                session.post(f"{base}/v1/chat/completions", json=body(5, stream=False))
            )

            async def one_waiting() -> bool:
                return (await stats(session, base))["waiting"] == 1

            await wait_until(one_waiting, what="a waiting request")
            waiter.cancel()  # closes that connection while the request is still queued

            async def left_queue() -> bool:
                s = await stats(session, base)
                return (s["running"], s["waiting"], s["finished"]["abort"]) == (1, 0, 1)

            await wait_until(left_queue, what="the waiter aborted, the hog still running")
            hog.close()

            async def empty() -> bool:
                s = await stats(session, base)
                return (s["running"], s["finished"]["abort"]) == (0, 2)

            await wait_until(empty, what="the hog aborted too")

    asyncio.run(scenario())
    codes = [line for line in server.lines if "status=499" in line]
    assert len(codes) == 1 and "finish_reason=abort" in codes[0]


@pytest.mark.parametrize("server", [{"max_num_seqs": 8, "time_scale": 0.01}], indirect=True)
def test_many_concurrent_non_streaming_requests_all_complete(server: ServerThread) -> None:
    base = server.base_url

    async def one(session: aiohttp.ClientSession, n: int) -> int:
        async with session.post(f"{base}/v1/chat/completions", json=body(n, stream=False)) as r:
            return (await r.json())["usage"]["completion_tokens"]

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session, 1 + i % 17) for i in range(60)))

    assert asyncio.run(scenario()) == [1 + i % 17 for i in range(60)]
