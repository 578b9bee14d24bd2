"""The simulated engine's counters and histograms, and vLLM's `/metrics` built from them.

What is exposed (names, types, HELP, labels, buckets) is vLLM's contract and lives in
`llmfleet.observability.vllm_metrics`; this module keeps the engine's state and, on each scrape,
turns it into prometheus_client metric families.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from llmfleet.observability.vllm_metrics import (
    FINISHED_REASONS,
    METRIC_LABELS,
    METRICS,
    histogram_buckets,
)

# What prometheus_client's own /metrics handlers, and so vLLM's, answer a scraper that asks for
# no particular format: the 0.0.4 text format. CONTENT_TYPE_LATEST says version=1.0.0 from
# prometheus_client 0.23 on, which is not what a real vLLM sends.
_, CONTENT_TYPE = choose_encoder("")


class Histogram:
    """Per-bucket counts with fixed upper bounds (the +Inf bucket is implicit)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation; bounds are inclusive upper limits (`le`)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(le, cumulative count) pairs, ending with (+Inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class EngineMetrics:
    """Counters and histograms of one engine. Gauges are read from the engine at scrape time."""

    def __init__(self, max_model_len: int) -> None:
        self.counters: dict[str, float] = {
            spec.name: 0.0 for spec in METRICS if spec.kind == "counter" and not spec.extra_labels
        }
        self.request_success: dict[str, int] = dict.fromkeys(FINISHED_REASONS, 0)
        self.histograms: dict[str, Histogram] = {
            spec.name: Histogram(histogram_buckets(spec, max_model_len))
            for spec in METRICS
            if spec.kind == "histogram"
        }

    def inc(self, name: str, amount: float = 1.0) -> None:
        """Increase the unlabelled counter `name` (exposed name, with `_total`)."""
        self.counters[name] += amount

    def observe(self, name: str, value: float) -> None:
        """Record one observation in histogram `name`."""
        self.histograms[name].observe(value)


@dataclass(frozen=True)
class Gauges:
    """The engine's instantaneous state at scrape time."""

    running: int
    waiting: int
    kv_cache_usage: float


class VllmCollector(Collector):
    """vLLM's metric families for one engine serving `model_name`, built on each scrape."""

    def __init__(
        self,
        metrics: EngineMetrics,
        gauges: Callable[[], Gauges],
        model_name: str,
        engine: str = "0",
    ) -> None:
        self.metrics = metrics
        self.gauges = gauges
        self.label_values = (model_name, engine)  # in METRIC_LABELS' order

    def collect(self) -> Iterator[Metric]:
        """Every family of `METRICS`, in order, with the engine's current values."""
        base = self.label_values
        gauges = self.gauges()
        gauge_values = {
            "vllm:num_requests_running": gauges.running,
            "vllm:num_requests_waiting": gauges.waiting,
            "vllm:kv_cache_usage_perc": gauges.kv_cache_usage,
        }
        for spec in METRICS:
            family: Metric
            if spec.kind == "gauge":
                family = GaugeMetricFamily(spec.name, spec.help, labels=METRIC_LABELS)
                family.add_metric(base, gauge_values[spec.name])
            elif spec.kind == "counter" and spec.extra_labels:
                family = CounterMetricFamily(
                    spec.name, spec.help, labels=(*METRIC_LABELS, *spec.extra_labels)
                )
                for reason, count in self.metrics.request_success.items():
                    family.add_metric((*base, reason), count)
            elif spec.kind == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=METRIC_LABELS)
                family.add_metric(base, self.metrics.counters[spec.name])
            else:
                histogram = self.metrics.histograms[spec.name]
                family = HistogramMetricFamily(spec.name, spec.help, labels=METRIC_LABELS)
                buckets = [(floatToGoString(le), count) for le, count in histogram.cumulative()]
                family.add_metric(base, buckets, histogram.sum)
            yield family


def engine_registry(
    metrics: EngineMetrics, gauges: Callable[[], Gauges], model_name: str
) -> CollectorRegistry:
    """A registry of its own for one server's engine: several simulated backends may share a
    process, and each must expose only its own engine."""
    registry = CollectorRegistry()
    registry.register(VllmCollector(metrics, gauges, model_name))
    return registry


def parse_exposition(text: str) -> tuple[dict[str, str], dict[str, str], list[Sample]]:
    """(HELP by family, TYPE by family, samples) of a text exposition, read by prometheus_client's
    parser. Families are keyed as exposed, so counters keep their `_total`.

    For tests and tooling that scrape the simulator or a real vLLM; raises ValueError on a line
    it cannot read so a malformed exposition fails loudly.
    """
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        helps[name] = family.documentation
        types[name] = family.type
        samples.extend(family.samples)
    return helps, types, samples
