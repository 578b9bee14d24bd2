"""Which decisions the gateway makes at once, and which need a Redis round trip."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from llmfleet.config import RateLimits
from llmfleet.gateway.answers import Answer
from llmfleet.gateway.keys import digest
from llmfleet.gateway.server import CachedKey, Gateway

KEY = "sk-lf-" + "A" * 43
OTHER = "sk-lf-" + "B" * 43


def gateway() -> Gateway:
    # Nothing listens on port 1: a decision that asked Redis would fail, not pass.
    return Gateway(RateLimits(), aioredis.Redis(port=1, socket_connect_timeout=0.1), 360)


def test_a_cached_unlimited_key_is_admitted_at_once_without_redis():
    subject = gateway()
    subject.cache[digest(KEY)] = CachedKey("bank", "enterprise", False, {}, time.monotonic())
    answer = subject.decide({"authorization": f"Bearer {KEY}"})
    assert isinstance(answer, Answer)
    assert answer.status == 200 and answer.headers["x-llmfleet-tier"] == "enterprise"


def test_no_key_is_refused_at_once():
    answer = gateway().decide({})
    assert isinstance(answer, Answer) and answer.status == 401


def test_an_unknown_key_asks_redis_and_a_failure_applies_the_fail_mode():
    subject = gateway()
    pending = subject.decide({"authorization": f"Bearer {OTHER}"})
    assert not isinstance(pending, Answer)
    answer = asyncio.run(pending)
    assert answer.status == 403 and answer.headers["x-llmfleet-deny"] == "unavailable"
    # While Redis is known to be down, the next decision does not wait for it again.
    assert isinstance(subject.decide({"authorization": f"Bearer {OTHER}"}), Answer)

