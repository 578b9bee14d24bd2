"""The scaler's metrics from Prometheus: the policy's windows as PromQL over the fleet's
recording rules (`llmfleet.observability.rules`), every query evaluated at the same instant.

Coverage comes from the recorded samples themselves: how far back the series the windows read
run without a gap, looking as far as the longest window and a margin (a longer history is not
needed). A Prometheus that started a minute ago, or that lost every backend for a
while, reports a short history, and the policy does not scale in on what it has not seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmfleet.autoscale.policy import Windows
from llmfleet.autoscale.sources import FleetMetrics, SourceError, covered_s, measured_or
from llmfleet.config import Autoscaling
from llmfleet.observability.prometheus_api import PrometheusError, query
from llmfleet.observability.promql import duration

WAITING = "fleet:requests_waiting:sum"
RUNNING = "fleet:requests_running:sum"
QUEUE_PER_NODE = "fleet:requests_waiting:avg"
NODE_RUNNING = "node:requests_running:sum"
NODE_CONCURRENCY = "fleet:node_concurrency:max"
# Answers per second at the edge by status class, refusals included: with no node at all each
# request is answered at once (502), so this is the arrival rate that wakes an empty fleet.
EDGE_ANSWERS = "fleet:edge_responses:rate"
# The series the windows read; the history is as long as the shortest of them.
WINDOW_SERIES = (WAITING, RUNNING, QUEUE_PER_NODE)
# A node's capacity changes only with its config: the last hour finds a time one was full.
CONCURRENCY_LOOKBACK_S = 3600.0
# Rules write a sample every evaluation; one missed evaluation is tolerated, two are a gap.
GAP_EVALUATIONS = 2.5


@dataclass(frozen=True)
class Queries:
    """Every PromQL expression one read evaluates."""

    waiting: str
    running: str
    running_by_node: str
    node_concurrency: str
    arrivals_rps: str
    queue_per_node_min_out: str
    queue_per_node_min_panic: str
    waiting_max_in: str
    running_max_in: str
    running_min_out: str
    arrivals_rps_in: str
    history: str  # a range selector: the raw samples coverage is read from

    def instant(self) -> dict[str, str]:
        """The queries that give one number (or one per node), by field name."""
        return {name: expr for name, expr in vars(self).items() if name != "history"}


def queries(scaling: Autoscaling, evaluation_interval_s: float) -> Queries:
    """The windows of `scaling` as PromQL over rules evaluated every `evaluation_interval_s`."""
    gap = _max_gap(evaluation_interval_s)
    longest = max(scaling.scale_out_after_s, scaling.panic_after_s, scaling.scale_in_after_s)
    # Far enough back to see the sample just before the longest window starts.
    reach = longest + 2 * gap
    return Queries(
        # Now is the latest sample, unless the series stopped: then there is no number.
        waiting=_over("last", WAITING, gap),
        running=_over("last", RUNNING, gap),
        running_by_node=_over("last", NODE_RUNNING, gap),
        node_concurrency=_over("max", NODE_CONCURRENCY, CONCURRENCY_LOOKBACK_S),
        arrivals_rps=f"sum({_over('last', EDGE_ANSWERS, gap)})",
        queue_per_node_min_out=_over("min", QUEUE_PER_NODE, scaling.scale_out_after_s),
        queue_per_node_min_panic=_over("min", QUEUE_PER_NODE, scaling.panic_after_s),
        waiting_max_in=_over("max", WAITING, scaling.scale_in_after_s),
        running_max_in=_over("max", RUNNING, scaling.scale_in_after_s),
        running_min_out=_over("min", RUNNING, scaling.scale_out_after_s),
        # The mean arrival rate over the scale-in window, against the rate now: the trend.
        arrivals_rps_in=(f"avg_over_time(sum({EDGE_ANSWERS})"
                         f"[{duration(max(scaling.scale_in_after_s, 1))}:"
                         f"{duration(evaluation_interval_s)}])"),
        history=f'{{__name__=~"{"|".join(WINDOW_SERIES)}"}}[{duration(reach)}]',
    )


class PrometheusSource:
    """A `MetricsSource` reading the fleet's recording rules from one Prometheus."""

    def __init__(self, url: str, scaling: Autoscaling, evaluation_interval_s: float,
                 timeout_s: float = 5.0, starting_concurrency: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.evaluation_interval_s = evaluation_interval_s
        self.queries = queries(scaling, evaluation_interval_s)
        self.timeout_s = timeout_s
        # What a backend is started to run at once (its max_num_seqs), until a queue in the
        # last hour has measured it.
        self.starting_concurrency = starting_concurrency

    def read(self, now: float) -> FleetMetrics:
        values = {name: self._query(expr, now) for name, expr in self.queries.instant().items()}
        history: dict[str, list[float]] = {}
        for series in self._query(self.queries.history, now):
            history.setdefault(series["metric"]["__name__"], []).extend(
                float(t) for t, _ in series["values"])

        def one(name: str) -> float | None:
            found = [_number(s["value"][1]) for s in values[name]]
            return next((v for v in found if v is not None), None)

        windows = Windows(
            covered_s=covered_s((history.get(name, ()) for name in WINDOW_SERIES), now,
                                _max_gap(self.evaluation_interval_s)),
            queue_per_node_min_out=one("queue_per_node_min_out"),
            queue_per_node_min_panic=one("queue_per_node_min_panic"),
            waiting_max_in=one("waiting_max_in"),
            running_max_in=one("running_max_in"),
            running_min_out=one("running_min_out"),
            arrivals_rps_in=one("arrivals_rps_in"),
        )
        by_node = {s["metric"].get("node", ""): _number(s["value"][1])
                   for s in values["running_by_node"]}
        return FleetMetrics(
            waiting=one("waiting"),
            running=one("running"),
            windows=windows,
            running_by_node={node: v for node, v in by_node.items() if v is not None},
            node_concurrency=measured_or(one("node_concurrency"), self.starting_concurrency),
            arrivals_rps=one("arrivals_rps"),
        )

    def _query(self, expr: str, now: float) -> list[dict[str, Any]]:
        try:
            return query(self.url, expr, at=now, timeout_s=self.timeout_s)
        except PrometheusError as error:
            raise SourceError(str(error)) from None


def _over(function: str, series: str, window_s: float) -> str:
    """`function`_over_time of `series` over the window; a window of 0 is the value now."""
    if window_s <= 0:
        return series
    return f"{function}_over_time({series}[{duration(window_s)}])"


def _max_gap(evaluation_interval_s: float) -> float:
    return GAP_EVALUATIONS * evaluation_interval_s


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value
