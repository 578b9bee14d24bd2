"""While Redis is down, every key the gateway holds is judged by its tier's fail mode."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from llmfleet.config import RateLimits
from llmfleet.gateway.answers import Answer
from llmfleet.gateway.keys import digest
from llmfleet.gateway.server import NO_OVERRIDES, CachedKey, Gateway, _cached

FREE, PAID, ENTERPRISE, REVOKED, STRANGER = ("sk-lf-" + c * 43 for c in "FPERS")


def outage() -> Gateway:
    """A gateway holding four key records (never used), whose Redis is down: nothing listens
    on port 1."""
    subject = Gateway(RateLimits(), aioredis.Redis(port=1, socket_connect_timeout=0.1), 360)
    for key, tier, revoked in ((FREE, "free", False), (PAID, "paid", False),
                               (ENTERPRISE, "enterprise", False), (REVOKED, "paid", True)):
        subject.cache[digest(key)] = CachedKey("acme", tier, revoked, NO_OVERRIDES,
                                               float("-inf"))
    return subject


def decide(subject: Gateway, key: str) -> Answer:
    answer = subject.decide({"authorization": f"Bearer {key}"})
    return answer if isinstance(answer, Answer) else asyncio.run(answer)


def test_each_known_key_gets_its_tiers_fail_mode_and_a_stranger_503():
    subject = outage()
    assert decide(subject, PAID).status == 200  # paid: open
    assert decide(subject, ENTERPRISE).status == 200
    free = decide(subject, FREE)
    assert free.status == 403 and free.headers["x-llmfleet-deny"] == "unavailable"  # 503
    assert free.headers["x-llmfleet-tier"] == "free"
    stranger = decide(subject, STRANGER)
    assert stranger.status == 403 and stranger.headers["x-llmfleet-deny"] == "unavailable"
    assert stranger.headers["x-llmfleet-tier"] == ""


def test_a_key_known_as_revoked_is_refused_401_during_an_outage():
    answer = decide(outage(), REVOKED)
    assert answer.status == 401
    assert "revoked" in answer.headers["x-llmfleet-message"]


def test_open_tiers_are_bounded_in_memory_during_an_outage():
    subject = outage()
    statuses = [decide(subject, PAID).status for _ in range(61)]
    assert statuses == [200] * 60 + [403]  # paid: 60 a minute, the 61st is a 429


def test_records_share_one_empty_override_mapping_and_skip_malformed_ones():
    record = _cached({b"client": b"acme", b"tier": b"paid", b"revoked": b"0"}, 1.0)
    assert record is not None and record.overrides is NO_OVERRIDES
    with_override = _cached({b"client": b"acme", b"tier": b"paid", b"requests": b"5"}, 1.0)
    assert with_override is not None and with_override.overrides == {"requests": 5}
    assert _cached({b"tier": b"paid"}, 1.0) is None
    assert _cached({b"client": b"acme", b"tier": b"paid", b"requests": b"many"}, 1.0) is None
    odd = _cached({b"client": b"\xff", b"tier": b"paid"}, 1.0)
    assert odd is not None and odd.client == "\ufffd"
