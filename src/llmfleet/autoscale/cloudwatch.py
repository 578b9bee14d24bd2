"""The fleet's load through CloudWatch: what the edge publishes, and the scaler's source on AWS.

The edge's sync agent already probes every member each pass; it also reads their `/metrics`
and publishes one `FleetSample` per pass as high-resolution custom metrics in the `llmfleet`
namespace, with the stack as the only dimension (`metric_data`). The scaler Lambda reads them
back with GetMetricData (`CloudWatchSource`), so it needs no VPC and keeps working when the
monitor host is down.

Sizes are in the GPU groups' capacity units (an instance of weight 2 counts as two nodes), the
unit Auto Scaling's desired capacity uses: the policy then decides in the groups' own terms.

This module is in the scaler Lambda's zip: the standard library and botocore only (the clients
are passed in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from llmfleet.autoscale.policy import PolicySettings, Windows
from llmfleet.autoscale.sources import FleetMetrics, SourceError, covered_s, measured_or

NAMESPACE = "llmfleet"
DIMENSION = "Stack"
# Periods GetMetricData accepts for high-resolution metrics, below a minute.
_SHORT_PERIODS = (1, 5, 10, 30)
# One missed pass is tolerated, two are a gap (as for Prometheus' rule evaluations).
GAP_PERIODS = 2.5
# A unit's capacity changes only with the config: the last hour finds a time one was full.
CONCURRENCY_LOOKBACK_S = 3600


class Metric(StrEnum):
    WAITING = "RequestsWaiting"  # requests waiting in the ready nodes' queues
    RUNNING = "RequestsRunning"  # requests the ready nodes run
    READY = "ReadyCapacity"  # capacity units of the ready nodes
    UNIT_CONCURRENCY = "UnitConcurrency"  # requests a full node runs, per capacity unit
    ARRIVALS = "ArrivalsPerSecond"  # requests answered at the edge per second, refusals too


@dataclass(frozen=True)
class FleetSample:
    """The fleet's load as the edge saw it in one pass (None: not measured this pass)."""

    waiting: float
    running: float
    ready_capacity: float
    unit_concurrency: float | None = None  # only when some ready node has a queue
    arrivals_rps: float | None = None  # from the second pass on

    def values(self) -> dict[Metric, float]:
        found = {Metric.WAITING: self.waiting, Metric.RUNNING: self.running,
                 Metric.READY: self.ready_capacity, Metric.UNIT_CONCURRENCY: self.unit_concurrency,
                 Metric.ARRIVALS: self.arrivals_rps}
        return {metric: value for metric, value in found.items() if value is not None}


def metric_data(stack: str, sample: FleetSample, at: datetime) -> list[dict[str, Any]]:
    """The sample as PutMetricData's `MetricData`, at one-second resolution."""
    return [{"MetricName": metric.value, "Dimensions": _dimensions(stack), "Timestamp": at,
             "Value": value, "StorageResolution": 1}
            for metric, value in sample.values().items()]


def period_for(publish_interval_s: float) -> int:
    """The shortest period GetMetricData accepts that holds at least one sample of an edge
    publishing every `publish_interval_s`."""
    for period in _SHORT_PERIODS:
        if period >= publish_interval_s:
            return period
    return 60 * -(-int(publish_interval_s) // 60)


@dataclass(frozen=True)
class Series:
    """One metric's samples, oldest first, as (time in seconds since the epoch, value)."""

    points: tuple[tuple[float, float], ...]

    def since(self, start: float) -> list[float]:
        return [v for t, v in self.points if t >= start]

    def latest(self, now: float, max_age_s: float) -> float | None:
        fresh = [v for t, v in self.points if now - t <= max_age_s]
        return fresh[-1] if fresh else None


def windows(series: Mapping[Metric, Series], now: float, settings: PolicySettings,
            period_s: int) -> Windows:
    """The policy's windows from the published series, as the sandbox's recording rules give
    them: the queue per ready unit, the fleet's waiting and running requests."""
    gap = GAP_PERIODS * period_s
    waiting, running = series[Metric.WAITING], series[Metric.RUNNING]
    ready = dict(series[Metric.READY].points)
    # Per unit only where units were ready: with none, there is no queue per node to judge.
    per_unit = Series(tuple((t, v / ready[t]) for t, v in waiting.points if ready.get(t)))

    def over(s: Series, window_s: float, pick: Any) -> float | None:
        values = s.since(now - window_s) if window_s > 0 else s.since(now - gap)[-1:]
        return pick(values) if values else None

    return Windows(
        covered_s=covered_s(([t for t, _ in s.points] for s in (waiting, running, per_unit)),
                            now, gap),
        queue_per_node_min_out=over(per_unit, settings.scale_out_after_s, min),
        queue_per_node_min_panic=over(per_unit, settings.panic_after_s, min),
        waiting_max_in=over(waiting, settings.scale_in_after_s, max),
        running_max_in=over(running, settings.scale_in_after_s, max),
        running_min_out=over(running, settings.scale_out_after_s, min),
        arrivals_rps_in=over(series[Metric.ARRIVALS], settings.scale_in_after_s, _mean),
    )


class CloudWatchSource:
    """A `MetricsSource` reading one stack's published samples with GetMetricData."""

    def __init__(self, cloudwatch: Any, stack: str, settings: PolicySettings,
                 period_s: int, starting_concurrency: float | None = None) -> None:
        self.cloudwatch, self.stack, self.settings = cloudwatch, stack, settings
        self.period_s = period_s
        # What a capacity unit is started to run at once (vLLM's max_num_seqs over the
        # type's weight), until a queue in the last hour has measured it.
        self.starting_concurrency = starting_concurrency
        longest = max(settings.scale_out_after_s, settings.panic_after_s,
                      settings.scale_in_after_s)
        # Far enough back to see the sample just before the longest window starts.
        self.reach_s = longest + 2 * GAP_PERIODS * period_s

    def read(self, now: float) -> FleetMetrics:
        end = now + self.period_s  # the bucket holding `now` is complete
        found = self._get(now - self.reach_s, end, self.period_s, "Average",
                          (Metric.WAITING, Metric.RUNNING, Metric.READY, Metric.ARRIVALS))
        concurrency = self._get(now - CONCURRENCY_LOOKBACK_S, end, self.period_s, "Maximum",
                                (Metric.UNIT_CONCURRENCY,))[Metric.UNIT_CONCURRENCY]
        gap = GAP_PERIODS * self.period_s
        arrivals = found[Metric.ARRIVALS]
        # The mean over the scale-out window, which the policy reads against the scale-in
        # window's mean for the trend; none once the edge stopped publishing.
        recent = arrivals.since(now - max(gap, self.settings.scale_out_after_s))
        return FleetMetrics(
            waiting=found[Metric.WAITING].latest(now, gap),
            running=found[Metric.RUNNING].latest(now, gap),
            windows=windows(found, now, self.settings, self.period_s),
            node_concurrency=measured_or(max((v for _, v in concurrency.points), default=None),
                                         self.starting_concurrency),
            arrivals_rps=_mean(recent) if arrivals.latest(now, gap) is not None else None,
        )

    def _get(self, start: float, end: float, period_s: int, stat: str,
             metrics: Sequence[Metric]) -> dict[Metric, Series]:
        queries = [{"Id": f"m{i}", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric.value,
                       "Dimensions": _dimensions(self.stack)},
            "Period": period_s, "Stat": stat}} for i, metric in enumerate(metrics)]
        points: dict[str, list[tuple[float, float]]] = {q["Id"]: [] for q in queries}
        request = {"MetricDataQueries": queries, "ScanBy": "TimestampAscending",
                   "StartTime": datetime.fromtimestamp(start, UTC),
                   "EndTime": datetime.fromtimestamp(end, UTC)}
        try:
            while True:
                page = self.cloudwatch.get_metric_data(**request)
                for result in page["MetricDataResults"]:
                    points[result["Id"]].extend(
                        (stamp.timestamp(), value)
                        for stamp, value in zip(result["Timestamps"], result["Values"],
                                                strict=True))
                if not page.get("NextToken"):
                    break
                request["NextToken"] = page["NextToken"]
        except (BotoCoreError, ClientError) as error:
            raise SourceError(f"cannot read {NAMESPACE} metrics of {self.stack} from "
                              f"CloudWatch: {error}") from None
        return {metric: Series(tuple(sorted(points[f"m{i}"])))
                for i, metric in enumerate(metrics)}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _dimensions(stack: str) -> list[dict[str, str]]:
    return [{"Name": DIMENSION, "Value": stack}]
