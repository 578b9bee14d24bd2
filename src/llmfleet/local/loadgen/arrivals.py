"""Open-loop arrival schedules: when each request starts, from a rate that may change over time.

A rate is a list of :class:`RateSegment` (piecewise constant, in seconds since the start of
the run). Arrival times come from inverting the cumulative rate ``Λ(t)`` (the expected number
of arrivals by ``t``): ``constant`` arrivals sit at ``Λ = 0, 1, 2, ...`` (evenly spaced at the
current rate), ``poisson`` arrivals at the running sum of exponential draws, which makes a
(non-homogeneous) Poisson process. No I/O; the same seed gives the same schedule.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ARRIVALS",
    "Arrival",
    "RateSegment",
    "arrival_times",
    "constant_rate",
    "mean_rate",
]

Arrival = Literal["poisson", "constant"]
ARRIVALS: tuple[Arrival, ...] = ("poisson", "constant")


@dataclass(frozen=True, slots=True)
class RateSegment:
    """``rps`` requests per second from ``start_s`` until ``end_s`` (``math.inf``: no end)."""

    start_s: float
    end_s: float
    rps: float


def constant_rate(rps: float, duration_s: float | None) -> list[RateSegment]:
    """One segment at ``rps``, for ``duration_s`` seconds or without end."""
    return [RateSegment(0.0, math.inf if duration_s is None else duration_s, rps)]


def _targets(arrival: Arrival, rng: random.Random) -> Iterator[float]:
    """Successive values of the cumulative rate at which requests arrive."""
    total = 0.0
    while True:
        if arrival == "constant":
            yield total
            total += 1.0
        else:
            total += rng.expovariate(1.0)
            yield total


def arrival_times(
    segments: Sequence[RateSegment], arrival: Arrival, seed: int, limit: int
) -> list[float]:
    """At most ``limit`` arrival times, ascending, all before the last segment ends.

    Raises ValueError for an unknown ``arrival`` or a segment list that is not contiguous
    from 0 with finite, non-negative rates.
    """
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival must be 'poisson' or 'constant', got {arrival!r}")
    _check_segments(segments)
    # A string seed hashes the same in every process (unlike hash() of a str).
    targets = _targets(arrival, random.Random(f"llmfleet-arrivals-{seed}"))
    times: list[float] = []
    index, reached = 0, 0.0  # the segment, and Λ at its start
    target = next(targets)
    while len(times) < limit and index < len(segments):
        segment = segments[index]
        span = (segment.end_s - segment.start_s) * segment.rps if segment.rps else 0.0
        if target < reached + span:
            times.append(segment.start_s + (target - reached) / segment.rps)
            target = next(targets)
        else:
            reached += span
            index += 1
    return times


def _check_segments(segments: Sequence[RateSegment]) -> None:
    expected_start = 0.0
    for segment in segments:
        if segment.start_s != expected_start or not segment.start_s < segment.end_s:
            raise ValueError(
                "rate segments must follow each other from 0 s without gaps, got "
                f"{segment.start_s}..{segment.end_s} after {expected_start}"
            )
        if not (math.isfinite(segment.rps) and segment.rps >= 0):
            raise ValueError(f"a rate must be a finite number >= 0, got {segment.rps!r}")
        expected_start = segment.end_s


def mean_rate(segments: Sequence[RateSegment], start_s: float, end_s: float) -> float:
    """The planned arrival rate averaged over ``start_s..end_s`` (0 outside the segments)."""
    if end_s <= start_s:
        return 0.0
    arrivals = sum(
        segment.rps * max(0.0, min(end_s, segment.end_s) - max(start_s, segment.start_s))
        for segment in segments
    )
    return arrivals / (end_s - start_s)
