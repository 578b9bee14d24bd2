"""Where the scaler's observations come from: a metrics source reads the fleet's load, the
caller knows its nodes, and `observations` makes the policy's `Observations` of the two.

A source is stateless: every `read` asks its store (Prometheus in the sandbox, CloudWatch on
AWS) for the windows afresh, so a scaler keeps nothing between runs but its `ScalerState`. A
source reports how far back its data goes (`Windows.covered_s`) as it finds it, never as it
hopes: a short or broken history is what keeps the policy from scaling in on missing data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from llmfleet.autoscale.policy import Node, Observations, Windows
from llmfleet.errors import LlmfleetError


class SourceError(LlmfleetError):
    """The source could not be read: the scaler makes no decision this time and says why."""


@dataclass(frozen=True)
class FleetMetrics:
    """The fleet's load as a source read it at one instant (None: no data)."""

    waiting: float | None  # requests waiting in the whole fleet
    running: float | None  # requests running in the whole fleet
    windows: Windows
    running_by_node: Mapping[str, float] = field(default_factory=dict)
    node_concurrency: float | None = None  # see Observations.node_concurrency
    arrivals_rps: float | None = None  # see Observations.arrivals_rps


class MetricsSource(Protocol):
    """What a scaler reads the fleet's load from."""

    def read(self, now: float) -> FleetMetrics:
        """The load at `now` (seconds since the epoch), every window ending then; raises
        SourceError when the store cannot be read."""
        ...


def observations(now: float, nodes: Sequence[Node], metrics: FleetMetrics) -> Observations:
    """The policy's snapshot: the caller's nodes, each with the requests it runs (none when
    the source has no number for it: a node that does not answer yet runs nothing)."""
    loaded = tuple(replace(n, running=metrics.running_by_node.get(n.name, 0.0)) for n in nodes)
    return Observations(now=now, nodes=loaded, waiting=metrics.waiting,
                        running=metrics.running, windows=metrics.windows,
                        node_concurrency=metrics.node_concurrency,
                        arrivals_rps=metrics.arrivals_rps)


def measured_or(measured: float | None, starting: float | None) -> float | None:
    """A node's concurrency: as a queue measured it (the running count of a node that has
    one), else what the engines are started to run at once (vLLM's max_num_seqs, from the
    config), as the simulator starts it; None when neither is known."""
    return measured if measured is not None else starting


def covered_s(series_times: Iterable[Iterable[float]], now: float, max_gap_s: float) -> float:
    """How far back every one of the series runs without a gap longer than `max_gap_s`, ending
    fresh at `now` (each series given by its sample times; one without samples covers
    nothing). The windows a source reads are only as long as the shortest of these."""
    spans = []
    for times in series_times:
        newest_first = sorted(times, reverse=True)
        if not newest_first or now - newest_first[0] > max_gap_s:
            return 0.0
        oldest = newest_first[0]
        for earlier in newest_first[1:]:
            if oldest - earlier > max_gap_s:
                break
            oldest = earlier
        spans.append(now - oldest)
    return min(spans, default=0.0)
