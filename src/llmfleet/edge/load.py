"""The fleet's load as the edge sees it, published to CloudWatch for the scaler (AWS).

After each pass the sync agent reads the `/metrics` of every ready member (vLLM's waiting and
running requests) and the edge exporter's count of answered requests, and publishes one
`FleetSample` (`llmfleet.autoscale.cloudwatch`). A member that does not answer in time counts
for nothing this pass; a failed publish is logged and the next pass publishes afresh.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.autoscale.cloudwatch import NAMESPACE, FleetSample, metric_data
from llmfleet.config import FleetConfig
from llmfleet.edge.members import Member
from llmfleet.observability.edge_exporter import RESPONSES

log = logging.getLogger("llmfleet.edge.load")

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
# A loaded vLLM answers /metrics in milliseconds; a node that takes longer counts for nothing.
METRICS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class NodeLoad:
    waiting: float
    running: float
    units: int  # the capacity units its instance type counts as


def metric_sums(text: str, names: Iterable[str]) -> dict[str, float]:
    """Each metric's samples summed (over engines, models and labels), from Prometheus' text
    format; a metric that is not there is 0."""
    wanted = set(names)
    sums = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                sums[sample.name] += sample.value
    return sums


def fetch_text(host: str, port: int, path: str, timeout_s: float) -> str | None:
    """The body of a GET, or None when it does not answer 200 in time."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def fleet_sample(loads: Sequence[NodeLoad], arrivals_rps: float | None) -> FleetSample:
    """The fleet's load from its ready nodes' loads. A node with a queue runs as many requests
    as it can: that, per unit, is the concurrency the scaler sizes with."""
    full = [n.running / n.units for n in loads if n.waiting > 0 and n.units]
    return FleetSample(
        waiting=sum(n.waiting for n in loads),
        running=sum(n.running for n in loads),
        ready_capacity=float(sum(n.units for n in loads)),
        unit_concurrency=max(full, default=None),
        arrivals_rps=arrivals_rps,
    )


class ArrivalRate:
    """Requests per second from a cumulative count read once a pass (None until two reads)."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def update(self, now: float, total: float | None) -> float | None:
        if total is None:
            return None
        last, self._last = self._last, (now, total)
        if last is None or now <= last[0] or total < last[1]:  # first read, or a restart
            return None
        return (total - last[1]) / (now - last[0])


class LoadPublisher:
    """Reads the ready members' load after each pass and publishes it for `stack`."""

    def __init__(self, config: FleetConfig, stack: str, cloudwatch: Any,
                 exporter: tuple[str, int] | None,
                 fetch: Callable[[str, int, str, float], str | None] = fetch_text) -> None:
        self.stack, self.cloudwatch, self.exporter, self.fetch = stack, cloudwatch, exporter, fetch
        self.units: Mapping[str, int] = {t.type: t.weight for t in config.fleet.instance_types}
        self.arrivals = ArrivalRate()

    def sample(self, ready: Sequence[Member], now: float) -> FleetSample:
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(ready)))) as pool:
            loads = [load for load in pool.map(self._node_load, ready) if load is not None]
        return fleet_sample(loads, self.arrivals.update(now, self._answered()))

    def publish(self, ready: Sequence[Member], now: float | None = None) -> FleetSample | None:
        """Sample and publish; None (and a log line) when CloudWatch refused it."""
        now = time.time() if now is None else now
        sample = self.sample(ready, now)
        try:
            self.cloudwatch.put_metric_data(
                Namespace=NAMESPACE,
                MetricData=metric_data(self.stack, sample, datetime.fromtimestamp(now, UTC)))
        except (BotoCoreError, ClientError) as error:  # the next pass publishes afresh
            log.warning("could not publish the fleet's load to CloudWatch: %s", error)
            return None
        return sample

    def _node_load(self, member: Member) -> NodeLoad | None:
        text = self.fetch(member.host, member.port, "/metrics", METRICS_TIMEOUT_S)
        if text is None:
            return None
        try:
            sums = metric_sums(text, (WAITING, RUNNING))
        except ValueError:  # not Prometheus' text format: not a vLLM we can read
            return None
        return NodeLoad(sums[WAITING], sums[RUNNING],
                        self.units.get(member.instance_type or "", 1))

    def _answered(self) -> float | None:
        if self.exporter is None:
            return None
        text = self.fetch(*self.exporter, "/metrics", METRICS_TIMEOUT_S)
        try:
            return None if text is None else metric_sums(text, (RESPONSES,))[RESPONSES]
        except ValueError:
            return None
