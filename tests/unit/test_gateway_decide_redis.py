"""The gateway's decision path on a real Redis: `Gateway.decide` with the limiter's Lua script,
the key records, revocation by push and each tier's fail mode, without nginx or HTTP.

Redis is the session's redis-server (tests/unit/conftest.py). Outages go through `Cuttable`,
a TCP relay between the gateway and Redis that a test cuts (connections reset, new ones
refused) or stalls (connections stay open, nothing comes back) and mends, as a network would:
the data in Redis survives, as it would on the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from llmfleet.cli import main as cli_main
from llmfleet.config import RateLimits, Tier
from llmfleet.gateway.answers import ADMIT, REFUSED, UNAUTHORIZED, Answer
from llmfleet.gateway.keys import CHANGED, RECORD, BadExport, KeyStore, digest, parse_export
from llmfleet.gateway.server import Gateway
from llmfleet.local.sandbox.ports import free_port

TIERS = {
    "free": Tier(requests=3, window_s=60, fail_mode="closed"),
    "paid": Tier(requests=5, window_s=60, fail_mode="open"),
    "enterprise": Tier(requests="unlimited", fail_mode="open"),
    "capped": Tier(requests="unlimited", max_concurrent=2),
    "brief": Tier(requests=2, window_s=0.5, fail_mode="closed"),
}
LIMITS = RateLimits(tiers=TIERS, redis_retry_s=0.2, key_cache_ttl_s=5, redis_timeout_ms=200)
STRANGER = "sk-lf-" + "Q" * 43  # well formed, in no record


class Cuttable:
    """A loopback TCP relay to `target_port` that can be cut, stalled and mended."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.stalled = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def mend(self) -> None:
        """Listen and relay (again); a stall ends."""
        self.stalled.clear()
        if self._listener is None:
            listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
            self._listener = listener
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Reset every relayed connection and refuse new ones, as a dead Redis does."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
            listener.close()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stall(self) -> None:
        """Keep every connection open but pass nothing on, as a hung Redis does."""
        self.stalled.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.stalled.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(redis_port: int) -> Iterator[Cuttable]:
    relay = Cuttable(redis_port)
    relay.mend()
    yield relay
    relay.cut()


@pytest.fixture
def store(redis_db: redis.Redis) -> KeyStore:
    return KeyStore(redis_db, set(TIERS))


def gateway(port: int) -> Gateway:
    """A gateway on the Redis at `port`, its client made as `python -m llmfleet.gateway` makes
    it (from a URL: no retries; the edge's short timeouts)."""
    timeout = LIMITS.redis_timeout_ms / 1000
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=timeout,
                               socket_connect_timeout=timeout, decode_responses=False)
    return Gateway(LIMITS, client, lease_ttl_s=30)


async def decide(subject: Gateway, key: str | None, header: str = "authorization") -> Answer:
    headers = {}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "authorization" else key
    answer = subject.decide(headers)
    return answer if isinstance(answer, Answer) else await answer


def refusal(answer: Answer) -> str | None:
    """How nginx answers a refusal: rate_limited (429), unavailable (503); None otherwise."""
    return answer.headers.get("x-llmfleet-deny") if answer.status == REFUSED else None


async def until(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# -- limits ----------------------------------------------------------------------------------


def test_each_limit_admits_exactly_its_number_then_refuses_with_when_to_retry(
        redis_port, store):
    paid, _ = store.create("uni", "paid")  # 5 a minute
    free, _ = store.create("school", "free")  # 3 a minute
    vip, _ = store.create("vip", "free", requests=4)  # the key's own limit beats its tier's

    async def scenario() -> None:
        subject = gateway(redis_port)
        answers = [await decide(subject, paid) for _ in range(6)]
        assert [a.status for a in answers] == [ADMIT] * 5 + [REFUSED]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == [
            "4", "3", "2", "1", "0", "0"]
        assert {a.headers["x-ratelimit-limit-requests"] for a in answers} == {"5"}
        assert answers[0].headers["x-llmfleet-client"] == "uni"
        assert refusal(answers[5]) == "rate_limited"
        assert 59 <= int(answers[5].headers["retry-after"]) <= 60
        assert [(await decide(subject, free)).status for _ in range(4)] == [ADMIT] * 3 + [REFUSED]
        assert [(await decide(subject, vip)).status for _ in range(5)] == [ADMIT] * 4 + [REFUSED]
        # Refused requests are not counted: the key stays at its limit, no further.
        assert store.redis.zcard("llmfleet:rl:" + digest(paid)) == 5

    asyncio.run(scenario())


def test_a_burst_of_simultaneous_decisions_admits_exactly_the_limit(redis_port, store):
    paid, _ = store.create("uni", "paid")

    async def scenario() -> list[int]:
        subject = gateway(redis_port)
        answers = await asyncio.gather(*(decide(subject, paid) for _ in range(300)))
        return [a.status for a in answers]

    statuses = asyncio.run(scenario())
    assert statuses.count(ADMIT) == 5 and statuses.count(REFUSED) == 295


def test_the_window_slides_admitting_again_exactly_a_window_after_the_first(redis_port, store):
    brief, _ = store.create("uni", "brief")  # 2 per 0.5 s

    async def scenario() -> None:
        subject = gateway(redis_port)
        started = time.time()  # Redis's clock is this machine's wall clock
        assert [(await decide(subject, brief)).status for _ in range(3)] == [
            ADMIT, ADMIT, REFUSED]
        admitted_at: list[float] = []

        async def admitted() -> bool:
            if (await decide(subject, brief)).status == ADMIT:
                admitted_at.append(time.time())
                return True
            return False

        assert await until(admitted, 3.0)
        # Not a millisecond early (the lower bound is exact); the upper one only bounds waiting.
        assert admitted_at[0] - started >= 0.499

    asyncio.run(scenario())


def test_the_in_flight_cap_is_exact_and_a_released_lease_frees_a_slot(redis_port, store):
    capped, _ = store.create("bank", "capped")  # unlimited, 2 in flight

    async def scenario() -> None:
        subject = gateway(redis_port)
        first, second, third = [await decide(subject, capped) for _ in range(3)]
        assert first.status == second.status == ADMIT
        assert first.headers["x-llmfleet-lease"] != second.headers["x-llmfleet-lease"]
        assert refusal(third) == "rate_limited" and third.reason == "concurrency"
        await subject.release(first.headers["x-llmfleet-lease"])
        fourth = await decide(subject, capped)
        assert fourth.status == ADMIT and "x-llmfleet-lease" in fourth.headers

    asyncio.run(scenario())


# -- keys ------------------------------------------------------------------------------------


def test_missing_malformed_and_unknown_keys_get_401(redis_port, store, redis_db):
    paid, _ = store.create("uni", "paid")
    redis_db.hset(RECORD + digest(STRANGER[:-1] + "R"),
                  mapping={"client": "ghost", "tier": "gold", "revoked": "0"})

    async def scenario() -> None:
        subject = gateway(redis_port)
        assert (await decide(subject, None)).status == UNAUTHORIZED
        assert (await decide(subject, "not-a-key")).status == UNAUTHORIZED
        unknown = await decide(subject, STRANGER)
        assert unknown.status == UNAUTHORIZED
        assert "Incorrect API key" in unknown.headers["x-llmfleet-message"]
        # A record naming a tier this gateway has no limits for admits nothing.
        assert (await decide(subject, STRANGER[:-1] + "R")).status == UNAUTHORIZED
        # Either header carries a key.
        assert (await decide(subject, paid, header="x-api-key")).status == ADMIT
        assert subject.decide({"authorization": f"Basic {paid}"}).status == UNAUTHORIZED

    asyncio.run(scenario())


def test_revocation_and_a_new_tier_take_effect_on_the_next_decision(redis_port, store):
    paid, _ = store.create("uni", "paid")
    free, _ = store.create("school", "free")

    async def scenario() -> None:
        subject = gateway(redis_port)
        assert (await decide(subject, paid)).status == ADMIT
        store.revoke(paid)
        revoked = await decide(subject, paid)
        assert revoked.status == UNAUTHORIZED
        assert "revoked" in revoked.headers["x-llmfleet-message"]
        while (await decide(subject, free)).status == ADMIT:
            pass
        store.set_tier(free, "paid")
        moved = await decide(subject, free)
        assert moved.status == ADMIT and moved.headers["x-ratelimit-limit-requests"] == "5"

    asyncio.run(scenario())


def test_revoking_a_cached_unlimited_key_reaches_the_gateway_by_push(redis_port, store):
    key, _ = store.create("bank", "enterprise")

    async def scenario() -> None:
        subject = gateway(redis_port)
        following = asyncio.create_task(subject.follow_changes())
        try:
            async def subscribed() -> bool:
                return dict(store.redis.pubsub_numsub(CHANGED))[CHANGED] >= 1

            assert await until(subscribed, 5.0)
            assert (await decide(subject, key)).status == ADMIT

            async def answered_at_once() -> bool:
                # Known and unlimited: no Redis round trip, the answer comes back at once.
                return isinstance(subject.decide({"authorization": f"Bearer {key}"}), Answer)

            assert await until(answered_at_once, 2.0)
            store.revoke(key)

            async def refused() -> bool:
                return (await decide(subject, key)).status == UNAUTHORIZED

            # Far inside the record's 5 s lifetime in the cache: pushed, not waited out.
            assert await until(refused, 1.0)
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following

    asyncio.run(scenario())


# -- Redis unreachable -------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["cut", "stall"])
def test_without_redis_each_tier_gets_its_fail_mode_then_shared_limits_return(
        relay, store, failure):
    free, _ = store.create("school", "free")  # fails closed
    paid, _ = store.create("uni", "paid")  # fails open, 5 a minute
    enterprise, _ = store.create("bank", "enterprise")  # fails open, unlimited

    async def scenario() -> None:
        subject = gateway(relay.port)
        for key in (free, paid, enterprise):  # each known to the gateway; one request on each
            assert (await decide(subject, key)).status == ADMIT
        getattr(relay, failure)()

        closed = await decide(subject, free)
        assert refusal(closed) == "unavailable" and int(closed.headers["retry-after"]) >= 1
        # Open and limited: counted in this gateway's memory meanwhile, from zero.
        statuses = [(await decide(subject, paid)).status for _ in range(6)]
        assert statuses == [ADMIT] * 5 + [REFUSED]
        assert (await decide(subject, enterprise)).status == ADMIT
        # A key the gateway has never heard of cannot be told from a stranger: 503.
        assert refusal(await decide(subject, STRANGER)) == "unavailable"

        relay.mend()

        async def closed_tier_served() -> bool:
            return (await decide(subject, free)).status == ADMIT

        assert await until(closed_tier_served, 5.0)
        # Shared counting is back, where Redis left it: 1 of 5 used before the outage.
        assert [(await decide(subject, paid)).status for _ in range(5)] == [ADMIT] * 4 + [
            REFUSED]

    asyncio.run(scenario())


# -- backups: keys export and import ---------------------------------------------------------

def test_an_export_imported_into_an_empty_redis_lets_every_key_in_again(redis_port, store,
                                                                         redis_db, tmp_path):
    keys = {tier: store.create(f"client-{tier}", tier)[0] for tier in ("free", "enterprise")}
    capped, _ = store.create("capped-client", "paid", requests=1)
    revoked, _ = store.create("gone", "paid")
    store.revoke(revoked)
    backup = tmp_path / "keys.jsonl"
    assert cli_main(["keys", "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                     "export", "--output", str(backup)]) == 0
    assert all(k not in backup.read_text() for k in (*keys.values(), capped, revoked))
    assert oct(backup.stat().st_mode & 0o777) == "0o600"

    redis_db.flushall()  # the edge's Redis, new and empty
    assert cli_main(["keys", "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                     "import", str(backup)]) == 0

    async def scenario() -> None:
        subject = gateway(redis_port)
        await subject.load_keys()
        for key in keys.values():
            assert (await decide(subject, key)).status == ADMIT
        assert (await decide(subject, revoked)).status == UNAUTHORIZED
        # The per-key override came along: one request, then the limit.
        assert (await decide(subject, capped)).status == ADMIT
        assert refusal(await decide(subject, capped)) == "rate_limited"
        await subject.redis.aclose()

    asyncio.run(scenario())


def test_an_import_keeps_records_already_there_unless_told_to_overwrite(store):
    key, _ = store.create("acme", "free")
    lines = store.export()
    store.set_tier(key, "paid")

    assert store.import_records(parse_export(lines, set(TIERS))).kept == 1
    assert store.find(key).tier == "paid"
    result = store.import_records(parse_export(lines, set(TIERS)), overwrite=True)
    assert (result.replaced, store.find(key).tier) == (1, "free")


@pytest.mark.parametrize(("line", "problem"), [
    ('{"digest": "sk-lf-abc"}', "digest = 'sk-lf-abc'; a SHA-256 digest"),
    ('{"digest": "' + "a" * 64 + '", "client": "x", "tier": "gold", "created": 1, '
     '"revoked": false}', "tier = 'gold'; a configured tier"),
    ('{"digest": "' + "a" * 64 + '", "client": "x", "tier": "free", "created": 1, '
     '"revoked": false, "requests": 0}', "requests = 0; a whole number of at least 1"),
    ("not json", "line 1: not JSON"),
])
def test_a_bad_export_line_is_named_and_nothing_is_written(store, line, problem):
    with pytest.raises(BadExport, match=problem.replace("(", r"\(")):
        store.import_records(parse_export([line], set(TIERS)))
    assert store.list() == []
