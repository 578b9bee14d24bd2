"""A running simulated backend's /metrics, after a few requests, against a checked-in list of
vLLM's families: names, types, HELP texts, label names and values, and histogram bounds.

The list was captured from the hand-written exposition that prometheus_client replaced, so a
change in any of these (which dashboards, alert rules and autoscalers depend on) fails here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.local.simbackend import ServerThread, SimSettings


class Family(NamedTuple):
    kind: str
    help: str
    labels: dict[str, tuple[str, ...]]  # label name → values in exposition order, `le` apart
    le: tuple[str, ...] = ()  # histogram bucket bounds in order


MODEL = "sim-model"
BASE = {"engine": ("0",), "model_name": (MODEL,)}
TOKENS = ("1.0", "2.0", "5.0", "10.0", "20.0", "50.0", "100.0", "200.0", "500.0", "1000.0",
          "+Inf")  # 1-2-5 up to max_model_len=1024
TTFT = ("0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "0.75",
        "1.0", "2.5", "5.0", "7.5", "10.0", "20.0", "40.0", "80.0", "160.0", "640.0", "2560.0",
        "+Inf")
ITL = ("0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.2", "0.3", "0.4", "0.5", "0.75", "1.0",
       "2.5", "5.0", "7.5", "10.0", "20.0", "40.0", "80.0", "+Inf")
LATENCY = ("0.3", "0.5", "0.8", "1.0", "1.5", "2.0", "2.5", "5.0", "10.0", "15.0", "20.0", "30.0",
           "40.0", "50.0", "60.0", "120.0", "240.0", "480.0", "960.0", "1920.0", "7680.0", "+Inf")

EXPECTED = {
    "vllm:num_requests_running": Family(
        "gauge", "Number of requests in model execution batches.", BASE),
    "vllm:num_requests_waiting": Family(
        "gauge", "Number of requests waiting to be processed.", BASE),
    "vllm:kv_cache_usage_perc": Family(
        "gauge", "KV-cache usage. 1 means 100 percent usage.", BASE),
    "vllm:prefix_cache_queries_total": Family(
        "counter", "Prefix cache queries, in terms of number of queried tokens.", BASE),
    "vllm:prefix_cache_hits_total": Family(
        "counter", "Prefix cache hits, in terms of number of cached tokens.", BASE),
    "vllm:num_preemptions_total": Family(
        "counter", "Cumulative number of preemption from the engine.", BASE),
    "vllm:prompt_tokens_total": Family(
        "counter", "Number of prefill tokens processed.", BASE),
    "vllm:generation_tokens_total": Family(
        "counter", "Number of generation tokens processed.", BASE),
    "vllm:request_success_total": Family(
        "counter", "Count of successfully processed requests.",
        {**BASE, "finished_reason": ("stop", "length", "abort")}),
    "vllm:request_prompt_tokens": Family(
        "histogram", "Number of prefill tokens processed.", BASE, TOKENS),
    "vllm:request_generation_tokens": Family(
        "histogram", "Number of generation tokens processed.", BASE, TOKENS),
    "vllm:time_to_first_token_seconds": Family(
        "histogram", "Histogram of time to first token in seconds.", BASE, TTFT),
    "vllm:inter_token_latency_seconds": Family(
        "histogram", "Histogram of inter-token latency in seconds.", BASE, ITL),
    "vllm:request_time_per_output_token_seconds": Family(
        "histogram", "Histogram of time_per_output_token_seconds per request.", BASE, ITL),
    "vllm:e2e_request_latency_seconds": Family(
        "histogram", "Histogram of e2e request latency in seconds.", BASE, LATENCY),
    "vllm:request_queue_time_seconds": Family(
        "histogram", "Histogram of time spent in WAITING phase for request.", BASE, LATENCY),
    "vllm:request_inference_time_seconds": Family(
        "histogram", "Histogram of time spent in RUNNING phase for request.", BASE, LATENCY),
    "vllm:request_prefill_time_seconds": Family(
        "histogram", "Histogram of time spent in PREFILL phase for request.", BASE, LATENCY),
    "vllm:request_decode_time_seconds": Family(
        "histogram", "Histogram of time spent in DECODE phase for request.", BASE, LATENCY),
}  # fmt: skip

SAMPLE_SUFFIXES = {"gauge": ("",), "counter": ("",), "histogram": ("_bucket", "_count", "_sum")}


@pytest.fixture(scope="module")
def scraped() -> Iterator[requests.Response]:
    settings = SimSettings(port=0, model="org/sim-model-8b", served_model_name=(MODEL,),
                           max_model_len=1024, time_scale=0.001, name="exposition-test")
    with ServerThread(settings) as server, requests.Session() as http:
        http.trust_env = False  # never route loopback through a proxy from the environment
        for n in (3, 7, 12):
            chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi " * n}],
                    "max_tokens": n}
            http.post(f"{server.base_url}/v1/chat/completions", json=chat,
                      timeout=10).raise_for_status()
        http.post(f"{server.base_url}/v1/completions", json={"model": MODEL, "prompt": "x" * 40},
                  timeout=10).raise_for_status()
        yield http.get(f"{server.base_url}/metrics", timeout=10)


def summary(text: str) -> tuple[dict[str, Family], dict[str, set[str]]]:
    """Each family as `Family`, keyed by its exposed name, and the sample names it carries."""
    found: dict[str, Family] = {}
    sample_names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels: dict[str, list[str]] = {}
        les: list[str] = []
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "le":
                    les.append(value)
                elif value not in labels.setdefault(label, []):
                    labels[label].append(value)
        found[name] = Family(family.type, family.documentation,
                             {k: tuple(v) for k, v in sorted(labels.items())}, tuple(les))
        sample_names[name] = {sample.name for sample in family.samples}
    return found, sample_names


def test_the_exposition_is_vllms_families_types_help_labels_and_buckets(scraped) -> None:
    assert scraped.status_code == 200
    found, _ = summary(scraped.text)
    assert found.keys() == EXPECTED.keys()
    for name, expected in EXPECTED.items():
        assert found[name] == expected, name


def test_each_family_carries_only_its_types_series(scraped) -> None:
    _, sample_names = summary(scraped.text)
    for name, expected in EXPECTED.items():
        assert sample_names[name] == {name + s for s in SAMPLE_SUFFIXES[expected.kind]}, name


def test_the_requests_served_are_counted(scraped) -> None:
    finished = next(f for f in text_string_to_metric_families(scraped.text)
                    if f.name == "vllm:request_success")
    assert sum(sample.value for sample in finished.samples) == 4


def test_tpot_is_observed_once_per_request_as_its_decode_time_over_later_tokens(scraped) -> None:
    samples = {sample.name: sample.value for family in text_string_to_metric_families(scraped.text)
               for sample in family.samples if not sample.name.endswith("_bucket")}
    tpot = "vllm:request_time_per_output_token_seconds"
    assert samples[f"{tpot}_count"] == samples["vllm:e2e_request_latency_seconds_count"] == 4
    # Each request's TPOT is its decode time over (tokens - 1), so no more than that time.
    assert 0 < samples[f"{tpot}_sum"] <= samples["vllm:request_decode_time_seconds_sum"]


def test_metrics_are_served_as_the_text_format(scraped) -> None:
    assert scraped.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
