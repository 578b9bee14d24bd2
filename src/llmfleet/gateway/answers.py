"""How a decision is told to nginx: status, headers and a JSON-safe message.

nginx's auth_request passes only 2xx (admit), 401 and 403 on; anything else becomes a 500.
So every refusal other than a bad key is a 403 whose `x-llmfleet-deny` header tells the edge
which status to answer with (429 or 503), using OpenAI's header names and forms.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from llmfleet.gateway.limiter import Verdict

ADMIT, UNAUTHORIZED, REFUSED = 200, 401, 403
# nginx puts the message into a JSON string literal; keep it to characters that need no escaping.
_UNSAFE = re.compile(r'[^A-Za-z0-9 .,:;()/_+=@%-]')


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    # metric label: ok | unauthorized | rate_limited | concurrency | redis_unavailable
    reason: str = "ok"


def duration(ms: float) -> str:
    """OpenAI's reset form: "20ms", "6s", "1m30s"."""
    if ms < 1000:
        return f"{max(0, round(ms))}ms"
    seconds = math.floor(ms) / 1000
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(math.floor(seconds), 60)
    return f"{minutes}m{rest}s"


def safe(message: str) -> str:
    return _UNSAFE.sub("", message)[:300]


def rate_headers(verdict: Verdict) -> dict[str, str]:
    if verdict.limit < 0:
        return {}  # unlimited: nothing to count down
    return {
        "x-ratelimit-limit-requests": str(verdict.limit),
        "x-ratelimit-remaining-requests": str(max(verdict.remaining, 0)),
        "x-ratelimit-reset-requests": duration(verdict.reset_ms),
    }


def admitted(verdict: Verdict, lease: str | None = None) -> Answer:
    headers = {"x-llmfleet-client": safe(verdict.client), "x-llmfleet-tier": verdict.tier,
               **rate_headers(verdict)}
    if lease:
        headers["x-llmfleet-lease"] = lease
    return Answer(ADMIT, headers)


def unauthorized(message: str) -> Answer:
    return Answer(UNAUTHORIZED, {"x-llmfleet-message": safe(message),
                                 "www-authenticate": 'Bearer realm="llmfleet"'},
                  reason="unauthorized")


def rate_limited(verdict: Verdict, window_s: float) -> Answer:
    retry_s = max(1, math.ceil(verdict.retry_after_ms / 1000))
    if verdict.outcome == "concurrency":
        message = (f"Too many requests in flight for this key on tier {verdict.tier}. "
                   f"Please try again in {retry_s}s.")
        reason = "concurrency"
    else:
        message = (f"Rate limit reached for requests on tier {verdict.tier}: limit "
                   f"{verdict.limit} per {duration(window_s * 1000)}. "
                   f"Please try again in {retry_s}s.")
        reason = "rate_limited"
    return Answer(REFUSED, {"x-llmfleet-deny": "rate_limited", "retry-after": str(retry_s),
                            "x-llmfleet-message": safe(message), "x-llmfleet-tier": verdict.tier,
                            **rate_headers(verdict)}, reason=reason)


def unavailable(retry_s: float, tier: str = "") -> Answer:
    return Answer(REFUSED, {
        "x-llmfleet-deny": "unavailable",
        "retry-after": str(max(1, math.ceil(retry_s))),
        "x-llmfleet-message": "The API key service is unavailable. Please retry shortly.",
        "x-llmfleet-tier": tier,
    }, reason="redis_unavailable")


def with_lease(answer: Answer, token: str) -> Answer:
    """`answer` holding one more lease token (a place on the fleet beside a key's slot)."""
    held = answer.headers.get("x-llmfleet-lease")
    return Answer(answer.status, {**answer.headers,
                                  "x-llmfleet-lease": f"{token} {held}" if held else token},
                  answer.reason)


def busy(retry_s: int) -> Answer:
    """Every node is full and the edge's queue is full or waited too long."""
    return Answer(REFUSED, {
        "x-llmfleet-deny": "busy",
        "retry-after": str(retry_s),
        "x-llmfleet-message": f"The service is busy: every model server is full. Please retry "
                              f"after {retry_s} seconds.",
    }, reason="busy")
