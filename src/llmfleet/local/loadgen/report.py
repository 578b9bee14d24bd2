"""The aggregated load report: totals, percentiles, the timeline, and their text summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .arrivals import RateSegment
from .benchmark import METRICS, STATISTICS, Slo, Summary, benchmark_figures
from .records import RequestRecord, percentile
from .timeline import TimelineBucket, bucket_size, build_timeline

__all__ = ["LoadReport", "OpenLoop", "RequestRecord", "build_report", "percentile"]

# How the text report names vLLM's metrics.
_TITLES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL"}

# The text summary shows the timeline in about this many rows; --json has every bucket.
TEXT_TIMELINE_ROWS = 12


@dataclass(frozen=True)
class OpenLoop:
    """How the requests of an open-loop run arrived.

    ``request_rate`` is the fixed rate, or None when ``profile`` (a trace's name) set it;
    ``time_scale`` compresses the trace's time axis (wall seconds = trace seconds × scale;
    rates stay as the trace gives them). ``rate`` is the planned rate in wall seconds.
    ``start_lag_max_s`` is how far the latest request started behind its planned time:
    near zero when the client kept up with the schedule.
    """

    arrival: str
    request_rate: float | None
    profile: str | None
    time_scale: float
    max_in_flight: int
    rate: list[RateSegment]
    start_lag_max_s: float

    def describe(self) -> str:
        """Such as ``poisson arrivals at 20 req/s`` or ``profile surge at time scale 0.1``."""
        if self.profile is None:
            return f"{self.arrival} arrivals at {self.request_rate:g} req/s"
        return f"{self.arrival} arrivals, profile {self.profile} at time scale {self.time_scale:g}"


@dataclass
class LoadReport:
    """Aggregated results of one load run.

    Latency and TTFT percentiles cover successful requests only (a timeout or refused
    connection says nothing about serving speed); they are None when nothing succeeded.
    ``requests_per_s`` counts every finished request, ``ok_requests_per_s`` only the
    successful ones, and ``output_tokens_per_s`` every output token received (including
    from broken streams), all over ``wall_time_s`` (first request sent to last one finished;
    the model lookup is not included).

    ``concurrency`` is the number of closed-loop clients (None for an open-loop run, which
    has ``open_loop`` instead). ``planned_requests`` is what the run's bounds allowed: ``-n``,
    or the requests started before ``duration_s`` closed the window, or every arrival of an
    open-loop schedule. ``dropped`` arrivals were never sent because ``max_in_flight``
    requests were already in flight. ``interrupted`` marks a partial report (Ctrl-C).
    ``started_at`` is the Unix time of the start. ``timeline`` splits the run into
    ``bucket_s``-second buckets. ``records`` holds the raw per-request records in request
    order and ``dropped_s`` the drop times; :meth:`to_dict` leaves both out unless asked.

    ``figures`` holds vLLM's benchmark summaries (``ttft``, ``tpot``, ``itl``, ``e2el``, see
    :mod:`.benchmark`); :meth:`to_dict` spells them as vLLM's JSON does (``p99_ttft_ms``).
    With an ``slo``, ``good`` counts the requests that met it and ``goodput_per_s`` is that
    over the wall time.
    """

    url: str
    model: str
    endpoint: str
    stream: bool
    concurrency: int | None
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
    open_loop: OpenLoop | None = None
    duration_s: float | None = None
    dropped: int = 0
    interrupted: bool = False
    started_at: float | None = None
    bucket_s: float = 1.0
    timeline: list[TimelineBucket] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    dropped_s: list[float] = field(default_factory=list, repr=False)
    figures: dict[str, Summary | None] = field(default_factory=dict)
    slo: Slo | None = None
    good: int | None = None
    goodput_per_s: float | None = None

    @property
    def errors(self) -> int:
        """Finished requests that did not succeed."""
        return self.total_requests - self.ok

    @property
    def all_ok(self) -> bool:
        """True when every planned request was sent and succeeded, without interruption."""
        return self.ok == self.planned_requests and not self.interrupted

    def to_dict(self, include_records: bool = False) -> dict[str, Any]:
        """A JSON-safe dict of the report (and the raw records if ``include_records``)."""
        # Not asdict(self): that would deep-copy every record only to drop them.
        raw = ("records", "dropped_s", "figures", "slo")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in raw}
        for metric in METRICS:
            summary = self.figures.get(metric)
            for key, _ in STATISTICS:
                value = None if summary is None else getattr(summary, key) * 1000
                data[f"{key}_{metric}_ms"] = value
        data["slo"] = str(self.slo) if self.slo else None
        data["request_goodput"] = data.pop("goodput_per_s")
        data["errors_by_status"] = dict(self.errors_by_status)
        data["requests_by_backend"] = dict(self.requests_by_backend)
        data["open_loop"] = asdict(self.open_loop) if self.open_loop else None
        data["timeline"] = [asdict(bucket) for bucket in self.timeline]
        data["errors"] = self.errors
        if include_records:
            data["records"] = [asdict(record) for record in self.records]
            data["dropped_s"] = list(self.dropped_s)
        return data

    @property
    def shape(self) -> str:
        """How the load was sent: closed loop (N clients) or open loop (arrivals), and for how
        long."""
        if self.open_loop is None:
            shape = f"closed loop, {self.concurrency} clients"
        else:
            shape = f"open loop, {self.open_loop.describe()}"
        if self.duration_s is not None:
            shape += f", for {self.duration_s:g} s"
        return shape

    def render_text(self) -> str:
        """A compact human-readable summary table."""
        stream = "stream" if self.stream else "no-stream"
        shape = self.shape
        if self.open_loop is not None:
            shape += f", max in flight {self.open_loop.max_in_flight};"
        lines = [
            f"target     {self.url}  model={self.model}  {self.endpoint} {stream}",
            f"workload   {shape} seed={self.seed} "
            f"output={self.output_tokens_dist} prompt={self.prompt_tokens_dist}",
            f"requests   {self.total_requests}/{self.planned_requests} finished, "
            f"{self.ok} ok, {self.errors} failed"
            + ("  (stopped at --max-duration)" if self.stopped_by_deadline else "")
            + ("  (interrupted: partial report)" if self.interrupted else ""),
        ]
        if self.dropped:
            assert self.open_loop is not None
            lines.append(
                f"dropped    {self.dropped} arrivals not sent: "
                f"{self.open_loop.max_in_flight} requests were in flight (--max-in-flight)"
            )
        if self.open_loop is not None:
            lines.append(
                f"schedule   latest start {_ms(self.open_loop.start_lag_max_s)} ms "
                "behind its planned time"
            )
        if self.errors_by_status:
            errors = ", ".join(f"{k}: {v}" for k, v in self.errors_by_status.items())
            lines.append(f"errors     {errors}")
        if self.requests_by_backend:
            backends = ", ".join(f"{k}: {v}" for k, v in self.requests_by_backend.items())
            lines.append(f"backends   {backends}")
        lines.append(f"{'ms':10}" + "".join(f" {title:>9}" for _, title in STATISTICS))
        for metric in METRICS:
            summary = self.figures.get(metric)
            values = [None if summary is None else getattr(summary, k) for k, _ in STATISTICS]
            lines.append(f"{_TITLES[metric]:10}" + "".join(f" {_ms(v):>9}" for v in values))
        if self.slo is not None:
            assert self.good is not None and self.goodput_per_s is not None
            share = self.good / self.total_requests * 100 if self.total_requests else 0.0
            lines.append(
                f"goodput    {self.goodput_per_s:.2f} req/s: {self.good} of "
                f"{self.total_requests} requests ({share:.1f}%) within {self.slo}"
            )
        lines += [
            f"throughput {self.requests_per_s:.2f} req/s ({self.ok_requests_per_s:.2f} ok), "
            f"{self.output_tokens_per_s:.1f} output tok/s, "
            f"{self.output_tokens_total} tokens in {self.wall_time_s:.2f} s",
        ]
        if self.broken_streams:
            lines.append(f"broken     {self.broken_streams} streams ended without [DONE]")
        if self.retried:
            lines.append(f"retried    {self.retried} (the connection closed before an answer)")
        if self.records or self.dropped_s:
            lines += self._timeline_text()
        return "\n".join(lines)

    def _timeline_text(self) -> list[str]:
        # A few coarse rows show a surge's phases; --json keeps every bucket.
        size = max(self.bucket_s, bucket_size(self.wall_time_s, TEXT_TIMELINE_ROWS))
        rows = build_timeline(
            self.records,
            self.dropped_s,
            size,
            rate=self.open_loop.rate if self.open_loop else None,
            span_s=self.wall_time_s,
        )
        target = self.open_loop is not None
        header = f"{'from s':>7} {'started/s':>9}" + (f" {'target/s':>8}" if target else "")
        header += f" {'in flight':>9} {'ok':>6} {'errors':>6}"
        header += f" {'dropped':>7}" if self.dropped else ""
        header += f" {'p50 ms':>8} {'p99 ms':>8}"
        lines = [
            f"timeline   {len(self.timeline)} buckets of {self.bucket_s:g} s in --json; "
            f"by {size:g} s:",
            header,
        ]
        for row in rows:
            line = f"{row.start_s:>7g} {row.started / size:>9.1f}"
            if target:
                line += f" {row.target_rps or 0.0:>8.1f}"
            line += f" {row.in_flight:>9.1f} {row.ok:>6} {row.errors:>6}"
            line += f" {row.dropped:>7}" if self.dropped else ""
            line += f" {_ms(row.latency_p50_s):>8} {_ms(row.latency_p99_s):>8}"
            lines.append(line)
        return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


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
    concurrency: int | None,
    seed: int,
    output_tokens_dist: str,
    prompt_tokens_dist: str,
    stopped_by_deadline: bool = False,
    open_loop: OpenLoop | None = None,
    duration_s: float | None = None,
    dropped_s: Sequence[float] = (),
    interrupted: bool = False,
    started_at: float | None = None,
    bucket_s: float | None = None,
    slo: Slo | None = None,
) -> LoadReport:
    """Aggregate per-request records (and drop times) into a :class:`LoadReport`.

    ``bucket_s`` sets the timeline's bucket; by default 1 s, coarser for runs over 10 minutes.
    """
    ordered = sorted(records, key=lambda r: r.index)
    good = [r for r in ordered if r.ok]
    latencies = [r.latency_s for r in good]
    ttfts = [r.ttft_s for r in good if r.ttft_s is not None]
    # Keys are strings so the dict is JSON-safe and HTTP codes sort next to named errors.
    errors = Counter(str(r.status) for r in ordered if not r.ok)
    backends = Counter(r.backend for r in ordered)
    tokens = sum(r.output_tokens for r in ordered)
    wall = max(wall_time_s, 1e-9)
    drops = sorted(dropped_s)
    size = bucket_s if bucket_s is not None else bucket_size(wall_time_s)
    timeline = build_timeline(
        ordered,
        drops,
        size,
        rate=open_loop.rate if open_loop else None,
        span_s=wall_time_s,
    )
    within_slo = None if slo is None else sum(1 for r in ordered if slo.met_by(r))
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
        open_loop=open_loop,
        duration_s=duration_s,
        dropped=len(drops),
        interrupted=interrupted,
        started_at=started_at,
        bucket_s=size,
        timeline=timeline,
        records=ordered,
        dropped_s=drops,
        figures=benchmark_figures(ordered),
        slo=slo,
        good=within_slo,
        goodput_per_s=None if within_slo is None else within_slo / wall,
    )
