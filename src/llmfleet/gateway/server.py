"""The gateway's decisions, and the routes nginx and scrapers ask: `GET /auth`, `/metrics`,
`/health`.

Per request: the key from `Authorization: Bearer` or `x-api-key`, its SHA-256, then one Redis
round trip (an EVALSHA that checks the key and applies the limit atomically). Keys of an
unlimited tier with no in-flight cap skip Redis while their record is fresh, and are answered
at once, without a task.

The gateway holds every key's record in memory (`Gateway.cache`, about 250 bytes a key): all of
them are loaded when it starts and each time its subscription to key changes is made again
(after any lost connection), again every `RESYNC_S`, and each record is read again the moment
a change to it is published. So while Redis is down every valid key, used before or not, is
judged by its tier's fail mode, and only a key no gateway has ever heard of gets 503. A record
stops being fresh (no skipping Redis) when its change is announced, after `key_cache_ttl_s`,
and for all keys at once when the connection to Redis is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import NoScriptError, RedisError

from llmfleet.config import FailMode, RateLimits, Tier
from llmfleet.gateway import answers
from llmfleet.gateway.admission import PLACE_PREFIX, Admission
from llmfleet.gateway.answers import Answer
from llmfleet.gateway.batch import RedisBatcher
from llmfleet.gateway.http import Handler, Request, response
from llmfleet.gateway.keys import (
    CHANGED,
    INDEX,
    OVERRIDES,
    RECORD,
    digest,
    key_id,
    looks_like_key,
)
from llmfleet.gateway.limiter import (
    ADMIT_SCRIPT,
    LEASES,
    LocalWindow,
    Verdict,
    parse_reply,
    script_keys,
    tier_args,
)
from llmfleet.gateway.metrics import GatewayMetrics

log = logging.getLogger("llmfleet.gateway")

# How long one wait for a published key change lasts; quiet hours are many waits in a row.
CHANGES_WAIT_S = 60.0
# Every key record is read again this often, besides at start and after a lost connection: a
# change written to Redis without being announced (by hand, or while this gateway's
# subscription was being made again) is picked up within this time.
RESYNC_S = 300.0
# Records read per round trip while loading every key: the gateway takes about 10 µs of CPU
# a record, so a decision waits at most a few milliseconds behind one batch.
LOAD_BATCH = 250
# What a gateway needs of a key record, read for a batch of keys in one script.
RECORD_FIELDS = ("client", "tier", "revoked", *OVERRIDES)
# KEYS: the records; ARGV: the fields. Returns each record's fields, nil where absent.
LOAD_SCRIPT = """
local rows = {}
for i, key in ipairs(KEYS) do
  rows[i] = redis.call('HMGET', key, unpack(ARGV))
end
return rows
"""
# Most keys have no overrides: they share this one empty mapping rather than each its own dict.
NO_OVERRIDES: Mapping[str, int] = MappingProxyType({})


@dataclass(slots=True)
class CachedKey:
    """One key's record as this gateway last read it from Redis."""

    client: str
    tier: str
    revoked: bool
    overrides: Mapping[str, int]
    fetched: float  # time.monotonic() of the read


class Gateway:
    """Decides admit or refuse for one request; owns the Redis client, cache and fallbacks."""

    def __init__(self, limits: RateLimits, redis_client: aioredis.Redis, lease_ttl_s: float,
                 admission: Admission | None = None):
        self.limits = limits
        # The edge's queue for a place on the fleet (None: no max_requests_per_node, no queue).
        self.admission = admission
        self.redis = redis_client
        self.batch = RedisBatcher(redis_client)
        self._tier_args = tier_args(round(lease_ttl_s * 1000), limits.tiers)
        self.metrics = GatewayMetrics()
        # Every key record, by digest: complete once `load_keys` has run (see the module's doc).
        self.cache: dict[str, CachedKey] = {}
        # Records read before this moment are not fresh, whatever their age (`_expire_cache`).
        self._valid_since = float("-inf")
        self._announced: set[str] = set()  # keys whose announced change is being read
        self.synced = False  # every record has been loaded at least once
        self.metrics.keys.set_function(lambda: len(self.cache))
        if admission is not None:
            self.metrics.queue_waiting.set_function(lambda: len(admission.waiting))
        self.local = LocalWindow()
        self.redis_up = True
        self.redis_down_until = 0.0
        self.last_failure_log = 0.0
        self._script_sha: str | None = None
        # Each admitted request's entry in its key's window and leases. Made here, never from
        # the client's X-Request-Id: a repeated member would overwrite, not add, and let a
        # client that repeats one id past its limit and its in-flight cap.
        self._members = (f"{secrets.token_hex(4)}.{n}" for n in itertools.count())

    # -- the decision --------------------------------------------------------------------

    def decide(self, headers: Mapping[str, str]) -> Answer | Coroutine[Any, Any, Answer]:
        """Admit or refuse one request (`headers` by lower-case name). What needs no Redis
        round trip (no usable key, an unlimited key in the cache, Redis known to be down) is
        answered at once; the rest comes back as a coroutine that asks Redis."""
        started = time.perf_counter()
        key, problem = extract_key(headers)
        if key is None:
            return self._counted(answers.unauthorized(problem), "none", started)
        key_digest = digest(key)
        cached = self._fresh(key_digest)
        if cached and not cached.revoked and self._skips_redis(cached):
            verdict = Verdict("ok", cached.client, cached.tier)
            return self._counted(answers.admitted(verdict), cached.tier, started)
        if time.monotonic() < self.redis_down_until:
            return self._counted(*self._without_redis(key_digest), started)
        return self._decide_in_redis(key_digest, cached is None, started)

    async def _decide_in_redis(self, key_digest: str, refresh: bool, started: float) -> Answer:
        member = next(self._members)
        try:
            verdict = await self._ask_redis(key_digest, member, refresh)
        except (TimeoutError, RedisError, OSError) as error:
            self._redis_failed(error)
            return self._counted(*self._without_redis(key_digest), started)
        self._redis_ok()
        return self._counted(self._answer(key_digest, verdict, member), verdict.tier, started)

    def _counted(self, answer: Answer, tier: str, started: float) -> Answer:
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        decision = "admitted" if answer.status == answers.ADMIT else "refused"
        self.metrics.requests.labels(tier or "none", decision, answer.reason).inc()
        return answer

    def _answer(self, key_digest: str, verdict: Verdict, member: str) -> Answer:
        if verdict.outcome in ("unknown", "revoked", "unknown_tier"):
            if verdict.outcome == "revoked":
                # Still known, as revoked: refused with 401 during an outage of Redis too.
                known = self.cache.get(key_digest)
                if known is not None:
                    known.revoked = True
                log.info("refused revoked key %s (client %s)", key_id(key_digest), verdict.client)
                return answers.unauthorized("This API key has been revoked.")
            self.cache.pop(key_digest, None)
            if verdict.outcome == "unknown_tier":
                log.warning("key %s names tier %r, which is not configured",
                            key_id(key_digest), verdict.tier)
            return answers.unauthorized("Incorrect API key provided.")
        if verdict.admitted:
            lease = f"{key_digest}:{member}" if verdict.leased else None
            return answers.admitted(verdict, lease)
        tier = self._tier(verdict.tier)
        return answers.rate_limited(verdict, tier.window_s if tier else 60.0)

    # -- Redis ---------------------------------------------------------------------------

    async def _ask_redis(self, key_digest: str, member: str, refresh: bool) -> Verdict:
        if self._script_sha is None:
            self._script_sha = await self.redis.script_load(ADMIT_SCRIPT)
        keys = script_keys(key_digest)
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", self._script_sha, len(keys), *keys, member, *self._tier_args)]
        if refresh:
            commands.insert(0, ("HGETALL", RECORD + key_digest))
        sent = time.monotonic()
        replies = await self.batch.execute(commands)
        if isinstance(replies[-1], NoScriptError):  # Redis restarted and lost its scripts
            self._script_sha = None
            return await self._ask_redis(key_digest, member, refresh)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if refresh and replies[0]:
            self._remember(key_digest, replies[0], sent)
        return parse_reply(replies[-1])

    def _redis_failed(self, error: BaseException) -> None:
        self.metrics.redis_errors.inc()
        self.metrics.redis_up.set(0)
        self.redis_up = False
        now = time.monotonic()
        self.redis_down_until = now + self.limits.redis_retry_s
        if now - self.last_failure_log >= self.limits.fail_log_interval_s:
            self.last_failure_log = now
            log.error("Redis unreachable (%s); applying each tier's fail mode, retrying every "
                      "%.1f s", type(error).__name__, self.limits.redis_retry_s)

    def _redis_ok(self) -> None:
        if not self.redis_up:
            log.info("Redis reachable again; limits are shared across gateways once more")
            self._expire_cache()  # changes published while we were away were missed
            self.local = LocalWindow()  # the outage's in-memory counts are done with
            self.redis_up = True
            self.metrics.redis_up.set(1)

    def _without_redis(self, key_digest: str) -> tuple[Answer, str]:
        retry_s = self.limits.redis_retry_s
        known = self.cache.get(key_digest)  # stale is better than nothing while Redis is down
        if known is None:
            return answers.unavailable(retry_s), "none"
        if known.revoked:
            return answers.unauthorized("This API key has been revoked."), known.tier
        tier = self._tier(known.tier)
        if tier is None or tier.fail_mode is FailMode.CLOSED:
            return answers.unavailable(retry_s, known.tier), known.tier
        self.metrics.fail_open.labels(known.tier).inc()
        limit = known.overrides.get("requests", None if tier.unlimited else tier.requests)
        if limit is None:
            return answers.admitted(Verdict("ok", known.client, known.tier)), known.tier
        window_s = known.overrides.get("window_ms", tier.window_s * 1000) / 1000
        verdict = replace(self.local.admit(key_digest, limit, window_s),
                          client=known.client, tier=known.tier)
        if verdict.admitted:
            return answers.admitted(verdict), known.tier
        return answers.rate_limited(verdict, window_s), known.tier

    # -- the key records ------------------------------------------------------------------

    def _fresh(self, key_digest: str) -> CachedKey | None:
        cached = self.cache.get(key_digest)
        if (cached and cached.fetched >= self._valid_since
                and time.monotonic() - cached.fetched <= self.limits.key_cache_ttl_s):
            return cached
        return None

    def _skips_redis(self, cached: CachedKey) -> bool:
        tier = self._tier(cached.tier)
        return (tier is not None and tier.unlimited and not tier.max_concurrent
                and not cached.overrides)

    def _tier(self, name: str) -> Tier | None:
        return self.limits.tiers.get(name)

    def _remember(self, key_digest: str, fields: Mapping, sent: float, *,
                  announced: bool = False) -> None:
        """Keep the record read by a request sent at `sent`, unless a later read has landed
        or a change to this key was announced and is being read (`announced` is that read)."""
        if not announced and key_digest in self._announced:
            return
        known = self.cache.get(key_digest)
        if known is not None and known.fetched > sent:
            return
        record = _cached(fields, sent)
        if record is None:
            log.warning("key %s has a malformed record in Redis; it is treated as unknown",
                        key_id(key_digest))
            self.cache.pop(key_digest, None)
        elif known is not None and _same(known, record):
            # Most reads find nothing changed: the object already held stays, so a resync
            # leaves nothing new for the garbage collector's full passes to scan.
            known.fetched = sent
        else:
            self.cache[key_digest] = record

    async def load_keys(self) -> int:
        """Read every key record from Redis into memory; returns how many there are. Records
        that are gone from Redis are forgotten, unless read again while this ran."""
        started = time.monotonic()
        seen: set[str] = set()
        cursor: int | bytes = 0
        while True:
            cursor, found = await self.redis.sscan(INDEX, cursor, count=LOAD_BATCH)
            digests = [_text(d) for d in found]
            sent = time.monotonic()  # one float shared by the batch's records
            # One script for the whole batch: a pipeline of HGETALLs costs the gateway about
            # ten times the CPU (redis-py's work per command), Redis about 0.2 ms either way.
            rows = await self.redis.eval(LOAD_SCRIPT, len(digests),
                                         *(RECORD + d for d in digests),
                                         *RECORD_FIELDS) if digests else []
            for key_digest, row in zip(digests, rows, strict=True):
                fields = {name: value for name, value in zip(RECORD_FIELDS, row, strict=True)
                          if value is not None}
                if fields:
                    self._remember(key_digest, fields, sent)
                    seen.add(key_digest)
            if not int(cursor):
                break
        for key_digest in self.cache.keys() - seen:  # in C: a few ms for 100,000 keys
            if self.cache[key_digest].fetched < started:
                del self.cache[key_digest]
        if not self.synced:
            log.info("%d key records loaded in %.2f s", len(self.cache),
                     time.monotonic() - started)
        self.synced = True
        return len(self.cache)

    async def follow_changes(self) -> None:
        """Keep every key record current: all of them loaded once subscribed to changes (at
        start and after any lost connection), then each one read again the moment `keys
        create`/`revoke`/`set-tier` announces it."""
        while True:
            loading: asyncio.Task | None = None
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANGED)
                    # Anything published before we (re)subscribed is lost: read everything.
                    self._expire_cache()
                    loading = asyncio.create_task(self.load_keys())
                    while True:
                        # A wait of our own: listen() would wait only the client's Redis timeout
                        # (200 ms), then drop the subscription for redis_retry_s, and changes
                        # published meanwhile would be missed.
                        message = await pubsub.get_message(timeout=CHANGES_WAIT_S)
                        if loading is not None and loading.done():
                            loading.result()  # a failed load raises here: subscribe again
                            loading = None
                        if message is not None and message["type"] == "message":
                            await self._changed(_text(message["data"]))
            except (RedisError, OSError):
                self._expire_cache()
                await asyncio.sleep(self.limits.redis_retry_s)
            except Exception as error:  # never stop following: revocations depend on it
                log.error("following key changes failed (%s); subscribing again",
                          type(error).__name__)
                self._expire_cache()
                await asyncio.sleep(self.limits.redis_retry_s)
            finally:
                if loading is not None:
                    loading.cancel()

    async def _changed(self, key_digest: str) -> None:
        """A key was created or changed: no skipping Redis for it from now on, then its
        record read again."""
        known = self.cache.get(key_digest)
        if known is not None:
            known.fetched = float("-inf")
        # Until it is read, no other read of this key (sent before the change) may land.
        self._announced.add(key_digest)
        try:
            sent = time.monotonic()
            fields = await self.redis.hgetall(RECORD + key_digest)
        finally:
            self._announced.discard(key_digest)
        if fields:
            self._remember(key_digest, fields, sent, announced=True)
        else:
            self.cache.pop(key_digest, None)

    async def resync_every(self, period_s: float = RESYNC_S) -> None:
        """Read every record again each `period_s`, while Redis answers."""
        while True:
            await asyncio.sleep(period_s)
            with contextlib.suppress(RedisError, OSError):
                await self.load_keys()

    def _expire_cache(self) -> None:
        """No record may skip Redis any more, but each stays known: while Redis is down, it
        is what tells a paying client's key (and its fail mode) from a stranger's."""
        self._valid_since = time.monotonic()

    async def release(self, lease: str) -> None:
        """A request with a lease finished: give its place on the fleet and its key's
        in-flight slot back (a lease holds either or both, space-separated)."""
        for token in lease.split():
            if token.startswith(PLACE_PREFIX):
                if self.admission is not None:
                    self.admission.leave(token)
                continue
            key_digest, _, member = token.partition(":")
            if not member:
                continue
            # On failure the lease still expires on its own after the longest request time.
            with contextlib.suppress(RedisError, OSError):
                await self.redis.zrem(LEASES + key_digest, member)

    async def queued(self, decided: Answer | Coroutine[Any, Any, Answer]) -> Answer:
        """An admitted request's place on the fleet: at once when there is room, else after
        waiting its turn in the edge's queue, else the busy answer."""
        answer = decided if isinstance(decided, Answer) else await decided
        if answer.status != answers.ADMIT or self.admission is None:
            return answer
        started = time.perf_counter()
        place = await self.admission.enter()
        self.metrics.queue_wait_seconds.observe(time.perf_counter() - started)
        if place is None:
            self.metrics.queue_refused.inc()
            return answers.busy(self.admission.retry_after_s)
        return answers.with_lease(answer, place)


def takes_a_place(headers: Mapping[str, str]) -> bool:
    """Whether the request is model work, which waits for a place on the fleet; listing the
    models (`/v1/models`) does not."""
    path = headers.get("x-original-uri", "").partition("?")[0].rstrip("/")
    return path != "/v1/models"


def extract_key(headers: Mapping[str, str]) -> tuple[str | None, str]:
    """The API key from `Authorization: Bearer <key>` or `x-api-key` (`headers` by lower-case
    name), or why there is none."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, "Malformed Authorization header; use: Authorization: Bearer YOUR_KEY"
        candidate = value.strip()
    else:
        candidate = (headers.get("x-api-key") or "").strip()
        if not candidate:
            return None, ("You did not provide an API key. Send it as Authorization: Bearer "
                          "YOUR_KEY")
    if not looks_like_key(candidate):
        return None, "Incorrect API key provided."
    return candidate, ""


def routes(gateway: Gateway) -> Handler:
    """The gateway's three routes, as a handler for `llmfleet.gateway.http`."""

    def encoded(answer: Answer) -> bytes:
        return response(answer.status, answer.headers.items())

    async def later(pending: Coroutine[Any, Any, Answer]) -> bytes:
        return encoded(await pending)

    def handle(request: Request) -> bytes | Coroutine[Any, Any, bytes]:
        if request.method not in ("GET", "HEAD"):
            return response(405, [("Allow", "GET, HEAD")])
        if request.path == "/auth":
            answer = gateway.decide(request.headers)
            if gateway.admission is not None and takes_a_place(request.headers):
                return later(gateway.queued(answer))
            return encoded(answer) if isinstance(answer, Answer) else later(answer)
        if request.path == "/health":
            body = json.dumps({"status": "ok", "redis": "up" if gateway.redis_up else "down",
                               "keys": len(gateway.cache), "synced": gateway.synced})
            return response(200, [("Content-Type", "application/json")], body.encode(),
                            head_only=request.head_only)
        if request.path == "/metrics":
            return response(200, [("Content-Type", CONTENT_TYPE_LATEST)],
                            generate_latest(gateway.metrics.registry),
                            head_only=request.head_only)
        return response(404, head_only=request.head_only)

    return handle


def _cached(fields: Mapping, fetched: float) -> CachedKey | None:
    """A record from its Redis hash; None when the hash is not a key record."""
    fields = {_text(k): _text(v) for k, v in fields.items()}
    if "client" not in fields or "tier" not in fields:
        return None
    try:
        overrides = {name: int(fields[name]) for name in OVERRIDES if name in fields}
    except ValueError:
        return None
    # Interned: many keys share a client's name and a tier's; each then costs one pointer.
    return CachedKey(sys.intern(fields["client"]), sys.intern(fields["tier"]),
                     fields.get("revoked") == "1", overrides or NO_OVERRIDES, fetched)


def _same(known: CachedKey, read: CachedKey) -> bool:
    return (known.client == read.client and known.tier == read.tier
            and known.revoked == read.revoked and known.overrides == read.overrides)


def _text(value: bytes | str) -> str:
    # Nothing the gateway writes is anything but UTF-8; a stray byte must not stop it.
    return value.decode(errors="replace") if isinstance(value, bytes) else value
