"""API keys and per-tier limits through the real edge: nginx auth_request, the gateway, Redis."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests

from llmfleet.config import validate
from llmfleet.gateway.keys import CHANGED, KeyStore
from llmfleet.local.sandbox import down, up
from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

TIERS = {
    "free": {"requests": 10, "window_s": 60, "fail_mode": "closed"},
    "paid": {"requests": 60, "window_s": 60, "fail_mode": "open"},
    "enterprise": {"requests": "unlimited"},
    "short": {"requests": 3, "window_s": 2, "fail_mode": "closed"},
}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("gateway-edge")
    config = validate({
        "rate_limits": {"tiers": TIERS},
        "sandbox": {"time_scale": 0.05, **{k: free_port() for k in (
            "edge_port", "base_port", "redis_port", "gateway_port")}},
    }, "test")
    try:
        box = up(config, state_dir, edge_port_explicit=True).to_json()
        box["tiers"] = TIERS
        box["issued"] = []  # every raw key handed out, for the log check
        yield box
    finally:
        down(state_dir)


@pytest.fixture
def keys(edge: dict[str, Any]) -> KeyStore:
    return key_store(Path(edge["state_dir"]))


def new_key(edge: dict[str, Any], keys: KeyStore, tier: str) -> str:
    raw, _ = keys.create(f"client-{len(edge['issued'])}", tier)
    edge["issued"].append(raw)
    return raw


def get(edge: dict[str, Any], key: str | None, **headers: str) -> requests.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.get(edge["endpoint"] + "/v1/models", headers=headers, timeout=10)


def error_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/json"
    return response.json()["error"]


def test_lab3_the_11th_request_in_a_minute_on_a_free_key_gets_429(edge, keys):
    key = new_key(edge, keys, "free")
    first_ten = [get(edge, key) for _ in range(10)]
    assert [r.status_code for r in first_ten] == [200] * 10
    assert [r.headers["x-ratelimit-remaining-requests"] for r in first_ten] == [
        str(n) for n in range(9, -1, -1)]
    assert all(r.headers["x-ratelimit-limit-requests"] == "10" for r in first_ten)
    eleventh = get(edge, key)
    assert eleventh.status_code == 429
    assert 1 <= int(eleventh.headers["Retry-After"]) <= 60
    assert eleventh.headers["x-ratelimit-limit-requests"] == "10"
    assert eleventh.headers["x-ratelimit-remaining-requests"] == "0"
    assert eleventh.headers["x-ratelimit-reset-requests"].endswith("s")
    error = error_of(eleventh)
    assert error["code"] == "rate_limit_exceeded" and "free" in error["message"]


def test_a_client_repeating_one_request_id_is_held_to_its_limit(edge, keys):
    # The id is the client's to choose; the limiter's window must count requests, not ids.
    key = new_key(edge, keys, "free")
    statuses = [get(edge, key, **{"X-Request-Id": "same"}).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]


def test_200_concurrent_requests_on_a_paid_key_admit_exactly_60(edge, keys):
    key = new_key(edge, keys, "paid")

    async def burst() -> list[int]:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one() -> int:
                async with session.get(edge["endpoint"] + "/v1/models",
                                       headers={"Authorization": f"Bearer {key}"}) as response:
                    await response.read()
                    return response.status
            return await asyncio.gather(*(one() for _ in range(200)))

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 60
    assert statuses.count(429) == 140


def test_admission_resumes_when_the_oldest_request_leaves_the_window(edge, keys):
    key = new_key(edge, keys, "short")  # 3 per 2 s
    started = time.monotonic()
    assert [get(edge, key).status_code for _ in range(3)] == [200] * 3
    refused = get(edge, key)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= 2
    # A fixed window would open again at the next edge; the sliding one stays shut until the
    # first request is a whole window old.
    time.sleep(1.0)  # moving the clock for the rule under test, not synchronising
    assert get(edge, key).status_code == 429
    admitted_at: list[float] = []

    def admitted() -> bool:
        if get(edge, key).status_code == 200:
            admitted_at.append(time.monotonic())
            return True
        return False

    assert wait_until(admitted, 5, interval_s=0.02)
    assert 1.9 <= admitted_at[0] - started <= 2.6


def test_unknown_revoked_and_retiered_keys_take_effect_at_once(edge, keys):
    unknown = get(edge, "sk-lf-" + "Z" * 43)
    assert unknown.status_code == 401 and error_of(unknown)["code"] == "invalid_api_key"

    paid = new_key(edge, keys, "paid")
    assert get(edge, paid).status_code == 200
    keys.revoke(paid)
    revoked = get(edge, paid)
    assert revoked.status_code == 401 and "revoked" in error_of(revoked)["message"]

    free = new_key(edge, keys, "free")
    while get(edge, free).status_code == 200:
        pass
    keys.set_tier(free, "paid")
    moved = get(edge, free)
    assert moved.status_code == 200 and moved.headers["x-ratelimit-limit-requests"] == "60"


def test_revoking_an_unlimited_key_reaches_the_gateways_cache_by_push(edge, keys):
    key = new_key(edge, keys, "enterprise")
    assert get(edge, key).status_code == 200
    assert get(edge, key).status_code == 200  # now served from the gateway's cache
    keys.revoke(key)
    # Unlimited keys skip Redis while cached; the revocation is pushed, not polled, so it
    # lands within milliseconds, far inside the cache's 5 s lifetime.
    assert wait_until(lambda: get(edge, key).status_code == 401, 1.0)


def test_the_gateway_stays_subscribed_to_key_changes(keys):
    # A lapse, however short, is a window in which a revocation is not pushed.
    def subscribers() -> int:
        return dict(keys.redis.pubsub_numsub(CHANGED))[CHANGED]

    assert subscribers() == 1
    assert not wait_until(lambda: subscribers() != 1, 3.0, interval_s=0.02)


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer sk-lf-short",
     "Bearer " + "k" * 10_240, "Bearer sk-lf-" + "é" * 43],
    ids=["no-key", "blank", "basic", "other-scheme", "short", "10kB", "non-ascii"],
)
def test_malformed_authorization_gets_a_clear_401_never_a_500(edge, authorization):
    response = requests.get(edge["endpoint"] + "/v1/models", timeout=10,
                            headers={"Authorization": authorization.encode("utf-8")})
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_raw_non_ascii_header_bytes_get_a_401(edge):
    address = urlsplit(edge["endpoint"])
    request = (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80\r\n"
               b"Connection: close\r\n\r\n")
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401")
    assert b'"invalid_api_key"' in reply


def test_a_request_without_a_key_gets_401_saying_what_is_missing(edge):
    missing = get(edge, None)
    assert missing.status_code == 401 and "did not provide" in error_of(missing)["message"]


def recorded_requests(edge: dict[str, Any]) -> list[dict[str, Any]]:
    """What every model server recorded of the requests it got, headers included."""
    seen = []
    for backend in edge["backends"]:
        answer = requests.get(backend["url"] + "/_sim/requests", timeout=5)
        answer.raise_for_status()
        seen += answer.json()["requests"]
    return seen


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key"])
def test_api_keys_never_reach_the_model_servers(edge, keys, header):
    # The gateway takes a key from either header; nginx must strip both before proxying.
    client = f"client-{len(edge['issued'])}"  # the name new_key gives it
    key = new_key(edge, keys, "enterprise")
    sent = {header: f"Bearer {key}" if header == "Authorization" else key}
    model = get(edge, key).json()["data"][0]["id"]
    request_ids = [f"key-check-{secrets.token_hex(6)}" for _ in range(4)]
    for request_id in request_ids:  # several: both backends are likely to get some
        response = requests.post(edge["endpoint"] + "/v1/chat/completions", timeout=30,
                                 headers={**sent, "X-Request-Id": request_id},
                                 json={"model": model, "max_tokens": 2,
                                       "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200
    seen = [r for r in recorded_requests(edge) if r["request_id"] in request_ids]
    # They reached the model servers, and what nginx adds did too: the check below looks at
    # what nginx forwarded, not at nothing.
    assert sorted(r["request_id"] for r in seen) == sorted(request_ids)
    for record in seen:
        pairs = [(name.lower(), value) for name, value in record["headers"]]
        assert ("x-llmfleet-client", client) in pairs, record
        assert not {"authorization", "x-api-key"} & {name for name, _ in pairs}, record
        assert not any(key[6:] in value for _, value in pairs), (
            f"a model server got the API key in {record}")


def test_gateway_metrics_count_decisions_by_tier_and_reason(edge, keys):
    key = new_key(edge, keys, "short")
    while get(edge, key).status_code == 200:
        pass
    gateway = edge["gateway"]["url"]
    text = requests.get(gateway + "/metrics", timeout=5).text

    def value(series: str) -> float:
        found = re.search(re.escape(series) + r" (\S+)", text)
        assert found, f"{series} missing from /metrics"
        return float(found.group(1))

    requests_total = "llmfleet_gateway_requests_total{decision=%s,reason=%s,tier=%s}"
    assert value(requests_total % ('"refused"', '"rate_limited"', '"short"')) >= 1
    assert value(requests_total % ('"admitted"', '"ok"', '"short"')) >= 3
    assert value(requests_total % ('"refused"', '"unauthorized"', '"none"')) >= 1
    assert value("llmfleet_gateway_decision_seconds_count") >= 4
    assert value("llmfleet_gateway_redis_up") == 1


def test_no_raw_key_appears_in_any_log_the_sandbox_writes(edge):
    # Runs after the others in this module (pytest keeps file order): every key they used.
    assert edge["issued"], "no keys were issued to look for"
    state_dir = Path(edge["state_dir"])
    logs = [*state_dir.glob("logs/*.log"), *state_dir.glob("nginx/*.log")]
    assert len(logs) >= 5
    for log in logs:
        text = log.read_text(errors="replace")
        for raw in edge["issued"]:
            assert raw not in text, f"{log.name} contains a raw API key"
            assert raw[6:] not in text, f"{log.name} contains the secret part of a key"
