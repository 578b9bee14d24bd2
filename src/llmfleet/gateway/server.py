"""The gateway's decisions, and the routes nginx and scrapers ask: `GET /auth`, `/metrics`,
`/health`.

Per request: the key from `Authorization: Bearer` or `x-api-key`, its SHA-256, then one Redis
round trip (an EVALSHA that checks the key and applies the limit atomically). Keys of an
unlimited tier with no in-flight cap skip Redis while their record is cached, and are answered
at once, without a task; the cache is emptied per key the moment a change is published, and
wholesale after any lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import NoScriptError, RedisError

from llmfleet.config import FailMode, RateLimits, Tier
from llmfleet.gateway import answers
from llmfleet.gateway.answers import Answer
from llmfleet.gateway.batch import RedisBatcher
from llmfleet.gateway.http import Handler, Request, response
from llmfleet.gateway.keys import (
    CHANGED,
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


@dataclass
class CachedKey:
    client: str
    tier: str
    revoked: bool
    overrides: dict[str, int]
    fetched: float


class Gateway:
    """Decides admit or refuse for one request; owns the Redis client, cache and fallbacks."""

    def __init__(self, limits: RateLimits, redis_client: aioredis.Redis, lease_ttl_s: float):
        self.limits = limits
        self.redis = redis_client
        self.batch = RedisBatcher(redis_client)
        self._tier_args = tier_args(round(lease_ttl_s * 1000), limits.tiers)
        self.metrics = GatewayMetrics()
        self.cache: dict[str, CachedKey] = {}
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
            self.cache.pop(key_digest, None)
            if verdict.outcome == "revoked":
                log.info("refused revoked key %s (client %s)", key_id(key_digest), verdict.client)
                return answers.unauthorized("This API key has been revoked.")
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
        replies = await self.batch.execute(commands)
        if isinstance(replies[-1], NoScriptError):  # Redis restarted and lost its scripts
            self._script_sha = None
            return await self._ask_redis(key_digest, member, refresh)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if refresh and replies[0]:
            self.cache[key_digest] = _cached(replies[0])
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
        if known is None or known.revoked:
            return answers.unavailable(retry_s), "none"
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

    # -- the key cache -------------------------------------------------------------------

    def _fresh(self, key_digest: str) -> CachedKey | None:
        cached = self.cache.get(key_digest)
        if cached and time.monotonic() - cached.fetched <= self.limits.key_cache_ttl_s:
            return cached
        return None

    def _skips_redis(self, cached: CachedKey) -> bool:
        tier = self._tier(cached.tier)
        return (tier is not None and tier.unlimited and not tier.max_concurrent
                and not cached.overrides)

    def _tier(self, name: str) -> Tier | None:
        return self.limits.tiers.get(name)

    async def follow_changes(self) -> None:
        """Drop a key's cached record the moment `keys revoke`/`set-tier` publishes it."""
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANGED)
                    self._expire_cache()  # anything published before we (re)subscribed is lost
                    while True:
                        # A wait of our own: listen() would wait only the client's Redis timeout
                        # (200 ms), then drop the subscription for redis_retry_s, and changes
                        # published meanwhile would land only when the cache next expires.
                        message = await pubsub.get_message(timeout=CHANGES_WAIT_S)
                        if message is not None and message["type"] == "message":
                            self.cache.pop(_text(message["data"]), None)
            except (RedisError, OSError):
                self._expire_cache()
                await asyncio.sleep(self.limits.redis_retry_s)

    def _expire_cache(self) -> None:
        """No cached record may skip Redis any more, but each stays known: while Redis is
        down, it is what tells a paying client's key (and its fail mode) from a stranger's."""
        for cached in self.cache.values():
            cached.fetched = float("-inf")

    async def release(self, lease: str) -> None:
        """A request with an in-flight lease finished: give its slot back."""
        key_digest, _, member = lease.partition(":")
        if not member:
            return
        # On failure the lease still expires on its own after the longest request time.
        with contextlib.suppress(RedisError, OSError):
            await self.redis.zrem(LEASES + key_digest, member)


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
            return encoded(answer) if isinstance(answer, Answer) else later(answer)
        if request.path == "/health":
            body = json.dumps({"status": "ok", "redis": "up" if gateway.redis_up else "down"})
            return response(200, [("Content-Type", "application/json")], body.encode(),
                            head_only=request.head_only)
        if request.path == "/metrics":
            return response(200, [("Content-Type", CONTENT_TYPE_LATEST)],
                            generate_latest(gateway.metrics.registry),
                            head_only=request.head_only)
        return response(404, head_only=request.head_only)

    return handle


def _cached(fields: dict) -> CachedKey:
    fields = {_text(k): _text(v) for k, v in fields.items()}
    overrides = {name: int(fields[name]) for name in OVERRIDES if name in fields}
    return CachedKey(fields["client"], fields["tier"], fields.get("revoked") == "1", overrides,
                     time.monotonic())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
