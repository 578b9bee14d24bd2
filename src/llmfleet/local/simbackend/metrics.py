"""vLLM's Prometheus metrics, rendered in the text exposition format 0.0.4 without a client library.

Names, types, HELP texts, labels and buckets follow vLLM V1 (`vllm/v1/metrics/loggers.py`) so that
dashboards, alert rules and autoscalers written against a real `vllm serve` work unchanged against
the simulator. Other modules import `METRIC_NAMES` / `METRICS` from here instead of retyping names.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Literal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

FINISHED_REASONS: tuple[str, ...] = ("stop", "length", "abort")

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric family as exposed: `name` is the exposed name (counters end in `_total`)."""

    name: str
    kind: Kind
    help: str
    # Fixed bucket bounds for histograms; empty with token_buckets=True means 1-2-5 buckets up
    # to max_model_len, as vLLM builds them for the token-count histograms.
    buckets: tuple[float, ...] = ()
    token_buckets: bool = False
    extra_labels: tuple[str, ...] = ()


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("vllm:num_requests_running", "gauge",
               "Number of requests in model execution batches."),
    MetricSpec("vllm:num_requests_waiting", "gauge",
               "Number of requests waiting to be processed."),
    MetricSpec("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage."),
    MetricSpec("vllm:prefix_cache_queries_total", "counter",
               "Prefix cache queries, in terms of number of queried tokens."),
    MetricSpec("vllm:prefix_cache_hits_total", "counter",
               "Prefix cache hits, in terms of number of cached tokens."),
    MetricSpec("vllm:num_preemptions_total", "counter",
               "Cumulative number of preemption from the engine."),
    MetricSpec("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed."),
    MetricSpec("vllm:generation_tokens_total", "counter",
               "Number of generation tokens processed."),
    MetricSpec("vllm:request_success_total", "counter",
               "Count of successfully processed requests.", extra_labels=("finished_reason",)),
    MetricSpec("vllm:request_prompt_tokens", "histogram", "Number of prefill tokens processed.",
               token_buckets=True),
    MetricSpec("vllm:request_generation_tokens", "histogram",
               "Number of generation tokens processed.", token_buckets=True),
    MetricSpec("vllm:time_to_first_token_seconds", "histogram",
               "Histogram of time to first token in seconds.", TTFT_BUCKETS),
    MetricSpec("vllm:inter_token_latency_seconds", "histogram",
               "Histogram of inter-token latency in seconds.", ITL_BUCKETS),
    MetricSpec("vllm:e2e_request_latency_seconds", "histogram",
               "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS),
    MetricSpec("vllm:request_queue_time_seconds", "histogram",
               "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS),
    MetricSpec("vllm:request_inference_time_seconds", "histogram",
               "Histogram of time spent in RUNNING phase for request.", REQUEST_LATENCY_BUCKETS),
    MetricSpec("vllm:request_prefill_time_seconds", "histogram",
               "Histogram of time spent in PREFILL phase for request.", REQUEST_LATENCY_BUCKETS),
    MetricSpec("vllm:request_decode_time_seconds", "histogram",
               "Histogram of time spent in DECODE phase for request.", REQUEST_LATENCY_BUCKETS),
)  # fmt: skip

METRIC_NAMES: tuple[str, ...] = tuple(spec.name for spec in METRICS)
METRIC_LABELS: tuple[str, ...] = ("model_name", "engine")


def build_1_2_5_buckets(max_value: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to `max_value` inclusive, as vLLM's build_1_2_5_buckets."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(float(b) for b in buckets)
            buckets.append(value)
        exponent += 1


def format_value(value: float) -> str:
    """A number as prometheus_client writes it ("1.0", "0.001", "+Inf", "1e+06")."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    # Go (and so prometheus_client) switches to exponent notation earlier than Python's repr.
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


class Histogram:
    """Cumulative-on-render histogram with fixed upper bounds (the +Inf bucket is implicit)."""

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
    """Counters and histograms of one engine. Gauges are read from the engine when rendering."""

    def __init__(self, max_model_len: int) -> None:
        token_buckets = build_1_2_5_buckets(max_model_len)
        self.counters: dict[str, float] = {
            spec.name: 0.0 for spec in METRICS if spec.kind == "counter" and not spec.extra_labels
        }
        self.request_success: dict[str, int] = dict.fromkeys(FINISHED_REASONS, 0)
        self.histograms: dict[str, Histogram] = {
            spec.name: Histogram(token_buckets if spec.token_buckets else spec.buckets)
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


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _series(name: str, labels: dict[str, str], value: float) -> str:
    # prometheus_client sorts label names in its exposition; do the same so diffs are byte-stable.
    rendered = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{rendered}}} {format_value(value)}"


def render(metrics: EngineMetrics, gauges: Gauges, model_name: str, engine: str = "0") -> str:
    """The full /metrics body for one engine serving `model_name`."""
    base = {"model_name": model_name, "engine": engine}
    gauge_values = {
        "vllm:num_requests_running": gauges.running,
        "vllm:num_requests_waiting": gauges.waiting,
        "vllm:kv_cache_usage_perc": gauges.kv_cache_usage,
    }
    lines: list[str] = []
    for spec in METRICS:
        lines.append(f"# HELP {spec.name} {_escape_help(spec.help)}")
        lines.append(f"# TYPE {spec.name} {spec.kind}")
        if spec.kind == "gauge":
            lines.append(_series(spec.name, base, gauge_values[spec.name]))
        elif spec.kind == "counter" and spec.extra_labels:
            for reason, count in metrics.request_success.items():
                lines.append(_series(spec.name, {**base, "finished_reason": reason}, count))
        elif spec.kind == "counter":
            lines.append(_series(spec.name, base, metrics.counters[spec.name]))
        else:
            histogram = metrics.histograms[spec.name]
            for bound, cumulative in histogram.cumulative():
                le = {**base, "le": format_value(bound)}
                lines.append(_series(f"{spec.name}_bucket", le, cumulative))
            lines.append(_series(f"{spec.name}_count", base, histogram.count))
            lines.append(_series(f"{spec.name}_sum", base, histogram.sum))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Sample:
    """One parsed series line."""

    name: str
    labels: dict[str, str]
    value: float


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPE_RE = re.compile(r"\\(.)")


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    return "\n" if char == "n" else char


def parse_exposition(text: str) -> tuple[dict[str, str], dict[str, str], list[Sample]]:
    """Parse a text exposition into (HELP by family, TYPE by family, samples).

    Enough of the format for tests and tooling that scrape the simulator or a real vLLM; it
    raises ValueError on a line it cannot read so a malformed exposition fails loudly.
    """
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            name, _, doc = line[len("# HELP ") :].partition(" ")
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            types[name] = kind
        elif line.startswith("#"):
            continue
        else:
            match = _SAMPLE_RE.match(line)
            if match is None:
                raise ValueError(f"unparseable exposition line: {line!r}")
            labels = {
                key: _ESCAPE_RE.sub(_unescape, value)
                for key, value in _LABEL_RE.findall(match.group(2) or "")
            }
            samples.append(Sample(match.group(1), labels, float(match.group(3))))
    return helps, types, samples
