"""Client tiers and how the edge limits them: requests per sliding window, an optional cap on
requests in flight, and what to do when Redis cannot be reached."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StringConstraints

from llmfleet.config.base import Strict

TierName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$"),
    Field(description="lower-case letters, digits, '-' or '_', starting with a letter"),
]

UNLIMITED = "unlimited"


def _requests_or_unlimited(value: object) -> object:
    """One clear error for both spellings, instead of one per branch of a union."""
    if value == UNLIMITED:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
        raise ValueError("must be a whole number from 1 to 10000000, or 'unlimited'")
    return value


Requests = Annotated[int | Literal["unlimited"], BeforeValidator(_requests_or_unlimited)]


class FailMode(StrEnum):
    """What a tier gets while Redis is unreachable."""

    OPEN = "open"  # admit, counting in each gateway's memory meanwhile
    CLOSED = "closed"  # refuse with 503 and Retry-After


class Tier(Strict):
    """One tier's limits."""

    requests: Requests = Field(..., description="requests admitted per window, or 'unlimited'")
    window_s: float = Field(60.0, gt=0, le=86_400)
    max_concurrent: int | None = Field(None, ge=1, le=100_000,
                                       description="requests in flight per key (none: no cap)")
    fail_mode: FailMode = FailMode.OPEN

    @property
    def unlimited(self) -> bool:
        return self.requests == UNLIMITED


def _default_tiers() -> dict[str, Tier]:
    # Free traffic is where abuse comes from, so it fails closed and protects paying users'
    # capacity; paying tiers fail open, because for them an outage of Redis must not become
    # an outage of the API. Each gateway still bounds every key in memory meanwhile.
    return {
        "free": Tier(requests=10, fail_mode=FailMode.CLOSED),
        "paid": Tier(requests=60, fail_mode=FailMode.OPEN),
        "enterprise": Tier(requests=UNLIMITED, fail_mode=FailMode.OPEN),
    }


class RateLimits(Strict):
    """API keys, tiers and the gateway that enforces them at the edge."""

    tiers: dict[TierName, Tier] = Field(default_factory=_default_tiers, min_length=1)
    key_cache_ttl_s: float = Field(
        5.0, ge=0, le=3600,
        description="how long a gateway trusts a cached key record; revocations and tier "
                    "changes are also pushed to every gateway at once",
    )
    # Long enough that a busy machine is not mistaken for a dead Redis (which flips every
    # tier to its fail mode for redis_retry_s), short enough that a hung one costs little.
    redis_timeout_ms: float = Field(200.0, gt=0, le=10_000)
    redis_retry_s: float = Field(
        1.0, gt=0, le=300, description="after a Redis failure, how long before trying again"
    )
    fail_log_interval_s: float = Field(30.0, gt=0, le=3600)
