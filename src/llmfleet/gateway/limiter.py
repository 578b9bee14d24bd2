"""The rate limiter: a sliding-window log in Redis, checked and updated in one atomic script.

Semantics (also in docs/rate-limits.md): a request at time t is admitted when fewer than N
requests of the same key were admitted in the window (t - W, t]. Refused requests are not
counted, so a client that backs off recovers on time. Time comes from the Redis server, so
every gateway shares one clock. The window's Redis key expires W after its newest request,
in the same script that writes it: no key is ever left without an expiry, and there is no
2x burst at a window edge as with a fixed window.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from llmfleet.config import Tier
from llmfleet.gateway.keys import RECORD

# KEYS: 1 key record (hash), 2 sliding-window log (zset), 3 leases in flight (zset)
# ARGV: 1 member (unique request id), 2 lease ttl ms, then per tier: name, limit (-1 for
#       unlimited), window ms, max concurrent (0 for none)
# Returns: {verdict, client, tier, limit, remaining, reset_ms, retry_after_ms, lease}
ADMIT_SCRIPT = """
local rec = redis.call('HMGET', KEYS[1], 'client', 'tier', 'revoked',
                       'requests', 'window_ms', 'max_concurrent')
if not rec[1] then return {'unknown', '', '', 0, 0, 0, 0, 0} end
if rec[3] == '1' then return {'revoked', rec[1], rec[2], 0, 0, 0, 0, 0} end
local limit, window, maxc
for i = 3, #ARGV, 4 do
  if ARGV[i] == rec[2] then
    limit = tonumber(ARGV[i + 1]); window = tonumber(ARGV[i + 2]); maxc = tonumber(ARGV[i + 3])
    break
  end
end
if limit == nil then return {'unknown_tier', rec[1], rec[2], 0, 0, 0, 0, 0} end
if rec[4] then limit = tonumber(rec[4]) end
if rec[5] then window = tonumber(rec[5]) end
if rec[6] then maxc = tonumber(rec[6]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= maxc then
    return {'concurrency', rec[1], rec[2], limit, 0, 0, 1000, 0}
  end
end
local remaining, reset = -1, 0
if limit >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[2])
  if count >= limit then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    return {'limited', rec[1], rec[2], limit, 0, tonumber(newest[2]) + window - now,
            tonumber(oldest[2]) + window - now, 0}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], window)
  remaining, reset = limit - count - 1, window
end
local lease = 0
if maxc > 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[2]))
  lease = 1
end
return {'ok', rec[1], rec[2], limit, remaining, reset, 0, lease}
"""

WINDOW = "llmfleet:rl:"
LEASES = "llmfleet:inflight:"


@dataclass(frozen=True)
class Verdict:
    """What the limiter decided for one request."""

    outcome: str  # ok | limited | concurrency | unknown | revoked | unknown_tier
    client: str = ""
    tier: str = ""
    limit: int = -1  # -1: unlimited
    remaining: int = -1
    reset_ms: int = 0  # until the window is empty again
    retry_after_ms: int = 0  # until the next request would be admitted
    leased: bool = False

    @property
    def admitted(self) -> bool:
        return self.outcome == "ok"


def script_keys(key_digest: str) -> list[str]:
    return [RECORD + key_digest, WINDOW + key_digest, LEASES + key_digest]


def tier_args(lease_ttl_ms: int, tiers: dict[str, Tier]) -> list[str | int]:
    """Every argument after the member; the same for every request, so built once."""
    args: list[str | int] = [lease_ttl_ms]
    for name, tier in tiers.items():
        args += [name, -1 if tier.unlimited else tier.requests, round(tier.window_s * 1000),
                 tier.max_concurrent or 0]
    return args


def script_args(member: str, lease_ttl_ms: int, tiers: dict[str, Tier]) -> list[str | int]:
    return [member, *tier_args(lease_ttl_ms, tiers)]


def parse_reply(reply: list) -> Verdict:
    outcome, client, tier, limit, remaining, reset_ms, retry_ms, lease = reply
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in (outcome, client, tier)]
    return Verdict(text[0], text[1], text[2], int(limit), int(remaining), int(reset_ms),
                   int(retry_ms), bool(int(lease)))


class LocalWindow:
    """The same sliding-window rule in this process's memory, for when Redis is unreachable
    and a tier fails open: each gateway then bounds every key on its own. It only matters
    during an outage, so the gateway starts a fresh one when Redis is back."""

    def __init__(self) -> None:
        self._admitted: dict[str, deque[float]] = {}

    def admit(self, key_digest: str, limit: int, window_s: float) -> Verdict:
        now = time.monotonic()
        log = self._admitted.setdefault(key_digest, deque())
        while log and log[0] <= now - window_s:
            log.popleft()
        if len(log) >= limit:
            retry = log[0] + window_s - now
            return Verdict("limited", limit=limit, remaining=0,
                           reset_ms=round((log[-1] + window_s - now) * 1000),
                           retry_after_ms=round(retry * 1000))
        log.append(now)
        return Verdict("ok", limit=limit, remaining=limit - len(log),
                       reset_ms=round(window_s * 1000))
