"""The limiter script and the key store on a real redis-server."""

from __future__ import annotations

import time

import pytest
import redis

from llmfleet.config import Tier
from llmfleet.gateway.keys import KeyStore, UnknownKey, digest
from llmfleet.gateway.limiter import (
    ADMIT_SCRIPT,
    LEASES,
    WINDOW,
    parse_reply,
    script_args,
    script_keys,
)

pytestmark = pytest.mark.integration

TIERS = {
    "free": Tier(requests=3, window_s=1.0, fail_mode="closed"),
    "paid": Tier(requests=5, window_s=60.0),
    "enterprise": Tier(requests="unlimited"),
    "capped": Tier(requests="unlimited", max_concurrent=2),
}


@pytest.fixture
def store(bare_redis: redis.Redis) -> KeyStore:
    return KeyStore(bare_redis, set(TIERS))


def admit(client: redis.Redis, key: str, member: str):
    d = digest(key)
    return parse_reply(client.eval(ADMIT_SCRIPT, 3, *script_keys(d),
                                   *script_args(member, 30_000, TIERS)))


def test_n_requests_per_window_then_refused_with_when_to_retry(bare_redis, store):
    key, _ = store.create("uni", "paid")
    verdicts = [admit(bare_redis, key, f"r{i}") for i in range(6)]
    assert [v.outcome for v in verdicts] == ["ok"] * 5 + ["limited"]
    assert [v.remaining for v in verdicts[:5]] == [4, 3, 2, 1, 0]
    assert verdicts[0].client == "uni" and verdicts[0].tier == "paid"
    assert 59_000 <= verdicts[5].retry_after_ms <= 60_000


def test_every_window_key_expires_with_its_newest_request(bare_redis, store):
    key, _ = store.create("uni", "paid")
    admit(bare_redis, key, "r1")
    ttl = bare_redis.pttl(WINDOW + digest(key))
    assert 59_000 <= ttl <= 60_000
    # Refused requests write nothing, so they cannot extend a client's punishment.
    for i in range(10):
        admit(bare_redis, key, f"more{i}")
    assert bare_redis.zcard(WINDOW + digest(key)) == 5


def test_the_window_slides_instead_of_resetting_at_an_edge(bare_redis, store):
    key, _ = store.create("uni", "free")  # 3 per 1 s
    assert all(admit(bare_redis, key, f"a{i}").admitted for i in range(3))
    # Half a window later a fixed window might have reset; a sliding one has not.
    time.sleep(0.5)  # moving the clock for the rule under test, not synchronising
    assert admit(bare_redis, key, "b").outcome == "limited"
    time.sleep(0.6)
    assert admit(bare_redis, key, "c").admitted


def test_unknown_revoked_and_retiered_keys_take_effect_on_the_next_call(bare_redis, store):
    assert admit(bare_redis, "sk-lf-" + "x" * 43, "r").outcome == "unknown"
    key, record = store.create("uni", "free")
    for i in range(3):
        admit(bare_redis, key, f"r{i}")
    assert admit(bare_redis, key, "r3").outcome == "limited"
    store.set_tier(record.id, "paid")
    after = admit(bare_redis, key, "r4")
    assert after.admitted and after.tier == "paid" and after.limit == 5
    store.revoke(key)
    assert admit(bare_redis, key, "r5").outcome == "revoked"


def test_per_key_overrides_beat_the_tier(bare_redis, store):
    key, _ = store.create("vip", "free", requests=4)
    assert [admit(bare_redis, key, f"r{i}").outcome for i in range(5)] == ["ok"] * 4 + [
        "limited"]


def test_unlimited_tiers_write_nothing(bare_redis, store):
    key, _ = store.create("bank", "enterprise")
    verdicts = [admit(bare_redis, key, f"r{i}") for i in range(50)]
    assert all(v.admitted and v.limit == -1 for v in verdicts)
    assert not bare_redis.exists(WINDOW + digest(key))


def test_in_flight_cap_holds_until_a_lease_is_released_or_expires(bare_redis, store):
    key, _ = store.create("bank", "capped")
    first, second, third = (admit(bare_redis, key, f"r{i}") for i in range(3))
    assert first.leased and second.leased and third.outcome == "concurrency"
    bare_redis.zrem(LEASES + digest(key), "r0")
    assert admit(bare_redis, key, "r3").admitted
    assert 0 < bare_redis.pttl(LEASES + digest(key)) <= 30_000


def test_keys_are_stored_only_as_digests(bare_redis, store):
    key, record = store.create("uni", "paid")
    everything = []
    for name in bare_redis.scan_iter("*"):
        everything.append(name)
        kind = bare_redis.type(name)
        if kind == "hash":
            everything += [*bare_redis.hgetall(name).keys(), *bare_redis.hgetall(name).values()]
        elif kind == "set":
            everything += list(bare_redis.smembers(name))
    assert all(key not in str(item) for item in everything)
    assert record.hint == key[:10] + "..."


def test_key_store_finds_by_key_or_id_and_refuses_what_it_cannot_name(store):
    key, record = store.create("uni", "paid")
    assert store.find(key).id == record.id == store.find(record.id[:8]).id
    assert [r.id for r in store.list()] == [record.id]
    with pytest.raises(UnknownKey, match="no key matches"):
        store.find("abcdef123456")
    with pytest.raises(UnknownKey, match="neither a key nor a key id"):
        store.find("xyz")
    with pytest.raises(ValueError, match="allowed: capped, enterprise, free, paid"):
        store.create("uni", "gold")
