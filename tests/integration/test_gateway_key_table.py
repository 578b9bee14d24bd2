"""Each gateway holds every key record: loaded at start, kept current by push, so that during
an outage of Redis every valid key (used before or not) keeps its tier's fail mode."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import requests

from llmfleet.config import RateLimits
from llmfleet.gateway.keys import INDEX, RECORD, KeyStore, digest
from llmfleet.gateway.server import Gateway
from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

TIERS = {
    "free": {"requests": 10, "fail_mode": "closed"},
    "paid": {"requests": 60, "fail_mode": "open"},
    "enterprise": {"requests": "unlimited"},
}


def get(box: dict[str, Any], key: str) -> requests.Response:
    return requests.get(box["endpoint"] + "/v1/models", timeout=10,
                        headers={"Authorization": f"Bearer {key}"})


def gateway_health(box: dict[str, Any]) -> dict[str, Any]:
    return requests.get(box["gateway"]["url"] + "/health", timeout=5).json()


def test_keys_never_used_keep_their_fail_mode_when_redis_dies(start_sandbox):
    # Unsupervised: Redis must stay down for the length of the test.
    box = start_sandbox(rate_limits={"tiers": TIERS, "redis_retry_s": 0.5}, supervise=False)
    store = key_store(Path(box["state_dir"]))
    paid, _ = store.create("startup", "paid")
    free, _ = store.create("uni", "free")
    enterprise, _ = store.create("bank", "enterprise")
    revoked, _ = store.create("gone", "paid")
    store.revoke(revoked)
    held = len(store.list())
    # Created (and revoked) after the gateway started: each one announced and read at once.
    assert wait_until(lambda: gateway_health(box)["keys"] == held, 5)

    os.kill(box["redis"]["pid"], signal.SIGKILL)
    # None of these keys was ever used: the gateway knows them from its own copy.
    assert get(box, paid).status_code == 200  # paid fails open
    assert get(box, enterprise).status_code == 200
    refused = get(box, free)  # free fails closed
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert get(box, revoked).status_code == 401  # known to be revoked
    unknown = get(box, "sk-lf-" + "Q" * 43)  # only a stranger cannot be told apart
    assert unknown.status_code == 503
    assert gateway_health(box)["redis"] == "down"


@pytest.fixture
def store(bare_redis: redis.Redis) -> KeyStore:
    return KeyStore(bare_redis, set(RateLimits().tiers))


def a_gateway(bare_redis: redis.Redis) -> Gateway:
    port = bare_redis.connection_pool.connection_kwargs["port"]
    return Gateway(RateLimits(), aioredis.Redis(port=port, socket_timeout=1), 360)


def test_a_gateway_loads_every_record_and_forgets_the_ones_gone(bare_redis, store):
    made = [store.create(f"client-{n % 7}", "paid")[1] for n in range(1200)]  # > one batch
    store.revoke(made[0].digest)
    subject = a_gateway(bare_redis)

    async def scenario() -> None:
        assert await subject.load_keys() == 1200
        assert subject.synced
        assert subject.cache[made[0].digest].revoked
        assert subject.cache[made[1].digest].tier == "paid"
        bare_redis.delete(RECORD + made[2].digest)
        bare_redis.srem(INDEX, made[2].digest)
        assert await subject.load_keys() == 1199
        assert made[2].digest not in subject.cache
        await subject.redis.aclose()

    asyncio.run(scenario())


def test_a_gateway_follows_creations_revocations_and_tier_changes_by_push(bare_redis, store):
    subject = a_gateway(bare_redis)
    existing, _ = store.create("old", "enterprise")

    async def scenario() -> None:
        following = asyncio.create_task(subject.follow_changes())
        loop = asyncio.get_running_loop()

        async def until(condition, timeout_s: float = 2.0) -> bool:
            deadline = loop.time() + timeout_s
            while not condition():
                if loop.time() > deadline:
                    return False
                await asyncio.sleep(0.005)
            return True

        assert await until(lambda: digest(existing) in subject.cache)  # loaded on subscribe
        _, record = await asyncio.to_thread(store.create, "new", "free")
        assert await until(lambda: record.digest in subject.cache)
        await asyncio.to_thread(store.set_tier, record.digest, "paid")
        assert await until(lambda: subject.cache[record.digest].tier == "paid")
        started = loop.time()
        await asyncio.to_thread(store.revoke, existing)
        assert await until(lambda: subject.cache[digest(existing)].revoked)
        assert loop.time() - started < 0.5  # by push: milliseconds, not a cache lifetime
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await subject.redis.aclose()

    asyncio.run(scenario())
