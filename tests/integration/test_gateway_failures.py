"""What the edge does when Redis dies and comes back, and the in-flight cap per key."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

TIERS = {
    "free": {"requests": 10, "fail_mode": "closed"},
    "paid": {"requests": 60, "fail_mode": "open"},
    "small": {"requests": 4, "fail_mode": "open"},
    "enterprise": {"requests": "unlimited"},
    "capped": {"requests": "unlimited", "max_concurrent": 2},
}


def get(box: dict[str, Any], key: str) -> requests.Response:
    return requests.get(box["endpoint"] + "/v1/models", timeout=10,
                        headers={"Authorization": f"Bearer {key}"})


def metric(box: dict[str, Any], name: str) -> str:
    text = requests.get(box["gateway"]["url"] + "/metrics", timeout=5).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_redis_down_each_tier_fails_as_configured_then_recovers_without_restart(
        start_sandbox, capsys):
    # Unsupervised: the test decides when Redis comes back.
    box = start_sandbox(rate_limits={"tiers": TIERS, "redis_retry_s": 0.5}, supervise=False)
    state_dir = Path(box["state_dir"])
    keys = key_store(state_dir)
    free, _ = keys.create("uni", "free")
    paid, _ = keys.create("startup", "paid")
    small, _ = keys.create("tiny", "small")
    # Each gateway remembers the keys it has seen: that is what lets it judge them without Redis.
    assert all(get(box, key).status_code == 200 for key in (free, paid, small))
    gateway_pid = box["gateway"]["pid"]

    os.kill(box["redis"]["pid"], signal.SIGKILL)
    closed = get(box, free)
    assert closed.status_code == 503
    assert int(closed.headers["Retry-After"]) >= 1
    assert closed.json()["error"]["code"] == "service_unavailable"
    assert get(box, paid).status_code == 200  # fails open
    # Open tiers are still bounded, per gateway, in memory: 4 per minute for "small".
    small_statuses = [get(box, small).status_code for _ in range(5)]
    assert small_statuses == [200, 200, 200, 200, 429]
    assert metric(box, "llmfleet_gateway_redis_up") == "llmfleet_gateway_redis_up 0.0"
    assert 'tier="paid"' in metric(box, "llmfleet_gateway_fail_open_total")
    unknown, _ = "sk-lf-" + "Q" * 43, None
    assert get(box, unknown).status_code == 503  # cannot tell a stranger from a client now

    restarted = subprocess.Popen(["redis-server", str(state_dir / "redis" / "redis.conf")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Redis keeps its data (AOF in the state directory): the keys made before the crash
        # work again, and so does their window, shared by every gateway.
        fresh = key_store(state_dir)
        assert wait_until(lambda: _answers(fresh), 10)
        assert wait_until(lambda: get(box, free).status_code == 200, 10)
        statuses = [get(box, free).status_code for _ in range(10)]
        assert statuses.count(429) >= 1 and statuses[-1] == 429  # shared limiting is back
        assert metric(box, "llmfleet_gateway_redis_up") == "llmfleet_gateway_redis_up 1.0"
        assert box["gateway"]["pid"] == gateway_pid
    finally:
        restarted.kill()
        restarted.wait()
    log = Path(box["gateway"]["log"]).read_text()
    # Logged once per interval, not once per request.
    assert log.count("Redis unreachable") == 1
    assert "Redis reachable again" in log


def _answers(store) -> bool:
    try:
        return bool(store.redis.ping())
    except Exception:
        return False


def test_in_flight_cap_refuses_the_third_stream_and_frees_slots_when_streams_end(start_sandbox):
    box = start_sandbox(rate_limits={"tiers": TIERS}, sandbox={"time_scale": 0.1})
    key, _ = key_store(Path(box["state_dir"])).create("bank", "capped")
    model = get(box, box["api_key"]).json()["data"][0]["id"]
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": 200}
    headers = {"Authorization": f"Bearer {key}"}

    async def scenario() -> tuple[list[int], int, int]:
        async with aiohttp.ClientSession() as session:
            url = box["endpoint"] + "/v1/chat/completions"
            streams = [await session.post(url, json=body, headers=headers) for _ in range(2)]
            third = await session.post(url, json=body, headers=headers)
            third_status = third.status
            third.release()
            for stream in streams:
                await stream.read()  # to the end: the slots are released by nginx's log line
            statuses = [s.status for s in streams]
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                after = await session.post(url, json={**body, "stream": False},
                                           headers=headers)
                await after.read()
                if after.status == 200 or asyncio.get_running_loop().time() > deadline:
                    return statuses, third_status, after.status

    statuses, third, after = asyncio.run(scenario())
    assert statuses == [200, 200]
    assert third == 429
    # Well before the lease's own expiry (read timeout + 60 s): released by the log line.
    assert after == 200


def test_gateway_down_the_edge_answers_503_json_not_500(start_sandbox):
    box = start_sandbox(supervise=False)  # the gateway stays down
    os.kill(box["gateway"]["pid"], signal.SIGKILL)
    response = get(box, box["api_key"])
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "service_unavailable"
