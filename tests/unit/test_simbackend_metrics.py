"""The simulator's /metrics exposition, read back with prometheus_client's parser: every vLLM
family with its HELP, type and labels, cumulative buckets, and the engine's current values."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.local.simbackend.metrics import (
    EngineMetrics,
    Gauges,
    engine_registry,
    parse_exposition,
)
from llmfleet.observability.vllm_metrics import FINISHED_REASONS, METRIC_NAMES, METRICS

SUFFIXES = {"gauge": ("",), "counter": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exposition(
    metrics: EngineMetrics | None = None, gauges: Gauges | None = None, model: str = "my-model"
) -> str:
    registry = engine_registry(metrics or EngineMetrics(4096),
                               lambda: gauges or Gauges(3, 7, 0.25), model)
    return generate_latest(registry).decode()


def families(text: str) -> dict[str, Metric]:
    """Parsed families by exposed name (the parser drops a counter's `_total`)."""
    parsed = text_string_to_metric_families(text)
    return {f"{f.name}_total" if f.type == "counter" else f.name: f for f in parsed}


def values(family: Metric, **labels: str) -> dict[str, float]:
    """Sample name (or `le` for buckets) → value, for the samples carrying `labels`."""
    return {s.labels.get("le", s.name): s.value for s in family.samples
            if labels.items() <= s.labels.items()}


def test_every_vllm_family_is_exposed_with_its_help_type_and_labels() -> None:
    found = families(exposition())
    assert list(found) == list(METRIC_NAMES)
    for spec in METRICS:
        family = found[spec.name]
        assert (family.type, family.documentation) == (spec.kind, spec.help)
        names = {sample.name for sample in family.samples}
        assert names == {spec.name + suffix for suffix in SUFFIXES[spec.kind]}, spec.name
        for sample in family.samples:
            assert sample.labels["model_name"] == "my-model"
            assert sample.labels["engine"] == "0"


def test_gauges_are_read_at_scrape_time_and_every_finish_reason_starts_at_zero() -> None:
    state = {"gauges": Gauges(3, 7, 0.25)}
    registry = engine_registry(EngineMetrics(4096), lambda: state["gauges"], "m")
    found = families(generate_latest(registry).decode())
    assert values(found["vllm:num_requests_running"]) == {"vllm:num_requests_running": 3}
    assert values(found["vllm:num_requests_waiting"]) == {"vllm:num_requests_waiting": 7}
    assert values(found["vllm:kv_cache_usage_perc"]) == {"vllm:kv_cache_usage_perc": 0.25}
    reasons = {s.labels["finished_reason"]: s.value
               for s in found["vllm:request_success_total"].samples}
    assert reasons == dict.fromkeys(FINISHED_REASONS, 0.0)

    state["gauges"] = Gauges(0, 1, 0.5)
    found = families(generate_latest(registry).decode())
    assert values(found["vllm:num_requests_waiting"]) == {"vllm:num_requests_waiting": 1}


@pytest.mark.parametrize("spec", [s for s in METRICS if s.kind == "histogram"],
                         ids=lambda spec: spec.name)
def test_histograms_expose_vllms_bounds_as_le_labels(spec) -> None:
    token_bounds = ["1.0", "2.0", "5.0", "10.0", "20.0", "50.0", "100.0", "200.0", "500.0",
                    "1000.0", "2000.0"]  # 1-2-5 up to max_model_len=4096
    family = families(exposition())[spec.name]
    les = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
    expected = token_bounds if spec.token_buckets else [repr(float(b)) for b in spec.buckets]
    assert les == [*expected, "+Inf"]


def test_observations_land_in_cumulative_buckets() -> None:
    metrics = EngineMetrics(4096)
    for value in (0.0005, 0.001, 0.3, 5000.0):
        metrics.observe("vllm:time_to_first_token_seconds", value)
    metrics.inc("vllm:generation_tokens_total", 42)
    metrics.request_success["length"] += 2
    found = families(exposition(metrics))
    ttft = values(found["vllm:time_to_first_token_seconds"])
    assert ttft["0.001"] == 2  # le is inclusive
    assert ttft["0.25"] == 2
    assert ttft["0.5"] == 3
    assert ttft["2560.0"] == 3
    assert ttft["+Inf"] == 4
    assert ttft["vllm:time_to_first_token_seconds_count"] == 4
    assert ttft["vllm:time_to_first_token_seconds_sum"] == pytest.approx(5000.3015)
    generated = values(found["vllm:generation_tokens_total"])
    assert generated == {"vllm:generation_tokens_total": 42}
    length = values(found["vllm:request_success_total"], finished_reason="length")
    assert length == {"vllm:request_success_total": 2}


def test_sums_keep_full_precision() -> None:
    metrics = EngineMetrics(4096)
    metrics.observe("vllm:request_decode_time_seconds", 80050817.90353458)
    found = families(exposition(metrics))
    decode = values(found["vllm:request_decode_time_seconds"])
    assert decode["vllm:request_decode_time_seconds_sum"] == 80050817.90353458


def test_label_values_are_escaped() -> None:
    found = families(exposition(EngineMetrics(16), Gauges(0, 0, 0.0), 'we"ird\\name\nx'))
    (sample,) = found["vllm:num_requests_running"].samples
    assert sample.labels["model_name"] == 'we"ird\\name\nx'


def test_parse_exposition_keys_families_as_exposed() -> None:
    helps, types, samples = parse_exposition(exposition())
    assert list(types) == list(METRIC_NAMES)
    assert types["vllm:prompt_tokens_total"] == "counter"
    assert helps["vllm:prompt_tokens_total"] == "Number of prefill tokens processed."
    assert {s.name for s in samples} >= {"vllm:prompt_tokens_total",
                                         "vllm:e2e_request_latency_seconds_bucket"}


def test_parse_exposition_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_exposition("this is { not a sample\n")
