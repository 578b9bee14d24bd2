"""vLLM's Prometheus metrics: the names, types, HELP texts, labels and buckets of `vllm serve`'s
`/metrics`, as vLLM V1 defines them in `vllm/v1/metrics/loggers.py`.

The simulated backend exposes exactly these and the dashboards may query only these, so both
import them from here; dashboards, alert rules and autoscalers written against a real vLLM then
work unchanged against the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

# Every series carries these; `engine` is the engine index ("0" for one engine per server).
METRIC_LABELS: tuple[str, ...] = ("model_name", "engine")
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
    MetricSpec("vllm:request_time_per_output_token_seconds", "histogram",
               "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS),
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


def histogram_buckets(spec: MetricSpec, max_model_len: int) -> tuple[float, ...]:
    """The upper bounds (without +Inf) of histogram `spec` for a model of `max_model_len`."""
    return build_1_2_5_buckets(max_model_len) if spec.token_buckets else spec.buckets
