"""Per-request records and the percentile helper every summary of them uses."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RequestRecord", "percentile", "write_records"]


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
    ``itl_s`` holds the gaps between successive content chunks of a stream (vLLM's
    inter-token latency, one value per chunk after the first).
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
    itl_s: list[float] = field(default_factory=list)

    @property
    def end_s(self) -> float:
        """When the request finished, in seconds since the start of the run."""
        return self.start_s + self.latency_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first, as vLLM's benchmark computes it:
        ``(latency - ttft) / (output_tokens - 1)``. None without a first token apart from the
        end (a non-streamed answer) or with fewer than two output tokens."""
        if self.ttft_s is None or self.output_tokens < 2 or self.ttft_s >= self.latency_s:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def ok(self) -> bool:
        """Whether the request completed successfully (2xx and, when streaming, [DONE])."""
        return isinstance(self.status, int) and 200 <= self.status < 300

    def to_line(self) -> dict[str, Any]:
        """The record as one ``--save-records`` line: its fields plus ``end_s`` and ``tpot_s``."""
        return {
            "index": self.index,
            "start_s": self.start_s,
            "ttft_s": self.ttft_s,
            "end_s": self.end_s,
            "latency_s": self.latency_s,
            "tpot_s": self.tpot_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "max_tokens": self.max_tokens,
            "status": self.status,
            "error": self.error,
            "backend": self.backend,
            "retries": self.retries,
            "itl_s": self.itl_s,
        }


def write_records(records: Iterable[RequestRecord], path: Path) -> None:
    """Write one JSON object per line per record (see :meth:`RequestRecord.to_line`)."""
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_line()) + "\n")
