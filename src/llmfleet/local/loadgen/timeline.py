"""A load run over time: per-bucket counts, requests in flight and latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .arrivals import RateSegment, mean_rate
from .records import RequestRecord, percentile

__all__ = ["TimelineBucket", "bucket_size", "build_timeline"]

# Bucket sizes a reader can add up in their head; the smallest that keeps the timeline short.
_NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def bucket_size(span_s: float, max_buckets: int = 600) -> float:
    """The smallest nice bucket (1 s, 2 s, 5 s, ...) that splits ``span_s`` into at most
    ``max_buckets`` buckets."""
    for size in _NICE_BUCKETS_S:
        if span_s / size <= max_buckets:
            return float(size)
    return float(math.ceil(span_s / max_buckets))


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    """What happened from ``start_s`` to ``start_s + bucket_s`` (seconds since the run began).

    ``started``, ``dropped``, ``ok`` and ``errors`` count requests by the moment they started,
    were dropped (over the in-flight cap) and finished; over all buckets they add up to the
    report's totals. ``in_flight`` is the time-weighted mean number of requests in flight.
    Percentiles cover successful requests finishing in the bucket (None without any).
    ``target_rps`` is the planned open-loop arrival rate averaged over the bucket.
    ``ok_by_backend`` splits ``ok`` by the backend that served each request.
    """

    start_s: float
    started: int
    dropped: int
    ok: int
    errors: int
    in_flight: float
    latency_p50_s: float | None
    latency_p99_s: float | None
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    target_rps: float | None = None
    ok_by_backend: dict[str, int] = field(default_factory=dict)


def build_timeline(
    records: Sequence[RequestRecord],
    dropped_s: Sequence[float],
    bucket_s: float,
    *,
    rate: Sequence[RateSegment] | None = None,
    span_s: float = 0.0,
) -> list[TimelineBucket]:
    """Bucket ``records`` and the drop times ``dropped_s`` into ``bucket_s``-second buckets.

    The timeline covers at least ``span_s`` seconds and every start, finish and drop.
    """
    if not (math.isfinite(bucket_s) and bucket_s > 0):
        raise ValueError(f"bucket_s must be a finite number of seconds > 0, got {bucket_s!r}")
    ends = [r.start_s + r.latency_s for r in records]
    last = max([span_s, *ends, *dropped_s], default=0.0)
    count = max(1, math.ceil(last / bucket_s - 1e-9))

    def index(t: float) -> int:
        return min(count - 1, max(0, int(t // bucket_s)))

    started = [0] * count
    dropped = [0] * count
    ok = [0] * count
    errors = [0] * count
    busy = [0.0] * count  # request-seconds spent in flight within each bucket
    latencies: list[list[float]] = [[] for _ in range(count)]
    ttfts: list[list[float]] = [[] for _ in range(count)]
    by_backend: list[dict[str, int]] = [{} for _ in range(count)]
    for record, end in zip(records, ends, strict=True):
        started[index(record.start_s)] += 1
        finished = index(end)
        if record.ok:
            ok[finished] += 1
            served = by_backend[finished]
            served[record.backend] = served.get(record.backend, 0) + 1
            latencies[finished].append(record.latency_s)
            if record.ttft_s is not None:
                ttfts[finished].append(record.ttft_s)
        else:
            errors[finished] += 1
        for i in range(index(record.start_s), finished + 1):
            low, high = i * bucket_s, (i + 1) * bucket_s
            busy[i] += max(0.0, min(end, high) - max(record.start_s, low))
    for t in dropped_s:
        dropped[index(t)] += 1

    def pct(values: list[float], q: float) -> float | None:
        return percentile(values, q) if values else None

    return [
        TimelineBucket(
            start_s=i * bucket_s,
            started=started[i],
            dropped=dropped[i],
            ok=ok[i],
            errors=errors[i],
            in_flight=busy[i] / bucket_s,
            latency_p50_s=pct(latencies[i], 50),
            latency_p99_s=pct(latencies[i], 99),
            ttft_p50_s=pct(ttfts[i], 50),
            ttft_p99_s=pct(ttfts[i], 99),
            target_rps=None if rate is None else mean_rate(rate, i * bucket_s, (i + 1) * bucket_s),
            ok_by_backend=dict(sorted(by_backend[i].items())),
        )
        for i in range(count)
    ]
