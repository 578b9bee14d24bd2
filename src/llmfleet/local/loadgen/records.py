"""Per-request records and the percentile helper every summary of them uses."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["RequestRecord", "percentile"]


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) by linear interpolation between closest ranks.

    This is the "linear" method of numpy's ``percentile`` (Hyndman & Fan type 7, Excel's
    PERCENTILE.INC): sort the n values, take the fractional rank ``r = (n - 1) * q / 100``
    and interpolate between the values at ``floor(r)`` and ``ceil(r)``. So ``q=0`` is the
    minimum, ``q=100`` the maximum and ``q=50`` the usual median. Raises ValueError for
    an empty input or ``q`` outside 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sequence")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request.

    ``status`` is the HTTP status, or one of: ``"connect_error"`` (no connection),
    ``"disconnected"`` (closed before a response), ``"timeout"`` (over ``timeout_s``),
    ``"deadline"`` (cut off by the run's ``max_duration_s``), ``"interrupted"`` (in flight
    when the run was interrupted, e.g. by Ctrl-C), ``"stream_broken"``
    (a 200 stream that ended without ``data: [DONE]``), ``"stream_error"`` (an error
    event inside a 200 stream) or ``"protocol_error"`` (a 200 body that is not the
    expected JSON). Times are seconds; ``start_s`` is relative to the start of the run.
    """

    index: int
    start_s: float
    status: int | str
    latency_s: float
    ttft_s: float | None  # first content delta; for non-streaming, the latency
    output_tokens: int  # usage.completion_tokens if reported, else content chunks seen
    prompt_tokens: int  # planned (approximate)
    max_tokens: int
    backend: str
    error: str | None = None
    retries: int = 0  # sent again after the connection closed before any answer

    @property
    def ok(self) -> bool:
        """Whether the request completed successfully (2xx and, when streaming, [DONE])."""
        return isinstance(self.status, int) and 200 <= self.status < 300
