"""Per-request records, the aggregated load report, and the shared percentile helper."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["LoadReport", "RequestRecord", "build_report", "percentile"]


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
    ``"deadline"`` (cut off by the run's ``max_duration_s``), ``"stream_broken"``
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


@dataclass
class LoadReport:
    """Aggregated results of one load run.

        Latency and TTFT percentiles cover successful requests only (a timeout or refused
        connection says nothing about serving speed); they are None when nothing succeeded.
        ``requests_per_s`` counts every finished request, ``ok_requests_per_s`` only the
        successful ones, and ``output_tokens_per_s`` every output token received (including
        from broken streams), all over ``wall_time_s`` (first request sent to last one finished;
    the model lookup is not included). ``records`` holds the raw per-request
        records in request order; :meth:`to_dict` leaves them out unless asked.
    """

    url: str
    model: str
    endpoint: str
    stream: bool
    concurrency: int
    seed: int
    output_tokens_dist: str
    prompt_tokens_dist: str
    planned_requests: int
    total_requests: int
    ok: int
    errors_by_status: dict[str, int]
    requests_by_backend: dict[str, int]
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    latency_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None
    output_tokens_total: int
    output_tokens_per_s: float
    requests_per_s: float
    ok_requests_per_s: float
    wall_time_s: float
    broken_streams: int
    stopped_by_deadline: bool
    retried: int = 0  # requests sent more than once (see LoadSpec.max_retries)
    records: list[RequestRecord] = field(default_factory=list, repr=False)

    @property
    def errors(self) -> int:
        """Finished requests that did not succeed."""
        return self.total_requests - self.ok

    @property
    def all_ok(self) -> bool:
        """True when every planned request was sent and succeeded."""
        return self.ok == self.planned_requests

    def to_dict(self, include_records: bool = False) -> dict[str, Any]:
        """A JSON-safe dict of the report (and the raw records if ``include_records``)."""
        # Not asdict(self): that would deep-copy every record only to drop them.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "records"}
        data["errors_by_status"] = dict(self.errors_by_status)
        data["requests_by_backend"] = dict(self.requests_by_backend)
        data["errors"] = self.errors
        if include_records:
            data["records"] = [asdict(record) for record in self.records]
        return data

    def render_text(self) -> str:
        """A compact human-readable summary table."""

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:.1f}"

        stream = "stream" if self.stream else "no-stream"
        lines = [
            f"target     {self.url}  model={self.model}  {self.endpoint} {stream}",
            f"workload   concurrency={self.concurrency} seed={self.seed} "
            f"output={self.output_tokens_dist} prompt={self.prompt_tokens_dist}",
            f"requests   {self.total_requests}/{self.planned_requests} finished, "
            f"{self.ok} ok, {self.errors} failed"
            + ("  (stopped at --max-duration)" if self.stopped_by_deadline else ""),
        ]
        if self.errors_by_status:
            errors = ", ".join(f"{k}: {v}" for k, v in self.errors_by_status.items())
            lines.append(f"errors     {errors}")
        if self.requests_by_backend:
            backends = ", ".join(f"{k}: {v}" for k, v in self.requests_by_backend.items())
            lines.append(f"backends   {backends}")
        lines += [
            f"{'':10} {'p50':>9} {'p95':>9} {'p99':>9} {'mean':>9}",
            f"{'latency ms':10} {ms(self.latency_p50_s):>9} {ms(self.latency_p95_s):>9} "
            f"{ms(self.latency_p99_s):>9} {ms(self.latency_mean_s):>9}",
            f"{'ttft ms':10} {ms(self.ttft_p50_s):>9} {ms(self.ttft_p95_s):>9} "
            f"{ms(self.ttft_p99_s):>9}",
            f"throughput {self.requests_per_s:.2f} req/s ({self.ok_requests_per_s:.2f} ok), "
            f"{self.output_tokens_per_s:.1f} output tok/s, "
            f"{self.output_tokens_total} tokens in {self.wall_time_s:.2f} s",
        ]
        if self.broken_streams:
            lines.append(f"broken     {self.broken_streams} streams ended without [DONE]")
        if self.retried:
            lines.append(f"retried    {self.retried} (the connection closed before an answer)")
        return "\n".join(lines)


def _pct(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def build_report(
    records: Iterable[RequestRecord],
    *,
    wall_time_s: float,
    planned_requests: int,
    url: str,
    model: str,
    endpoint: str,
    stream: bool,
    concurrency: int,
    seed: int,
    output_tokens_dist: str,
    prompt_tokens_dist: str,
    stopped_by_deadline: bool = False,
) -> LoadReport:
    """Aggregate per-request records into a :class:`LoadReport`."""
    ordered = sorted(records, key=lambda r: r.index)
    good = [r for r in ordered if r.ok]
    latencies = [r.latency_s for r in good]
    ttfts = [r.ttft_s for r in good if r.ttft_s is not None]
    # Keys are strings so the dict is JSON-safe and HTTP codes sort next to named errors.
    errors = Counter(str(r.status) for r in ordered if not r.ok)
    backends = Counter(r.backend for r in ordered)
    tokens = sum(r.output_tokens for r in ordered)
    wall = max(wall_time_s, 1e-9)
    return LoadReport(
        url=url,
        model=model,
        endpoint=endpoint,
        stream=stream,
        concurrency=concurrency,
        seed=seed,
        output_tokens_dist=output_tokens_dist,
        prompt_tokens_dist=prompt_tokens_dist,
        planned_requests=planned_requests,
        total_requests=len(ordered),
        ok=len(good),
        errors_by_status=dict(sorted(errors.items())),
        requests_by_backend=dict(sorted(backends.items())),
        latency_p50_s=_pct(latencies, 50),
        latency_p95_s=_pct(latencies, 95),
        latency_p99_s=_pct(latencies, 99),
        latency_mean_s=sum(latencies) / len(latencies) if latencies else None,
        ttft_p50_s=_pct(ttfts, 50),
        ttft_p95_s=_pct(ttfts, 95),
        ttft_p99_s=_pct(ttfts, 99),
        output_tokens_total=tokens,
        output_tokens_per_s=tokens / wall,
        requests_per_s=len(ordered) / wall,
        ok_requests_per_s=len(good) / wall,
        wall_time_s=wall_time_s,
        broken_streams=sum(1 for r in ordered if r.status == "stream_broken"),
        retried=sum(1 for r in ordered if r.retries),
        stopped_by_deadline=stopped_by_deadline,
        records=ordered,
    )
