"""The /metrics exposition: vLLM's names, types, HELP, labels and buckets, parsed back."""

from __future__ import annotations

import math

import pytest

from llmfleet.local.simbackend.metrics import (
    FINISHED_REASONS,
    ITL_BUCKETS,
    METRIC_NAMES,
    METRICS,
    REQUEST_LATENCY_BUCKETS,
    TTFT_BUCKETS,
    EngineMetrics,
    Gauges,
    build_1_2_5_buckets,
    format_value,
    parse_exposition,
    render,
)

# Straight from vllm/v1/metrics/loggers.py, written out again so a typo in the module fails here.
VLLM_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
             7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
VLLM_ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0]  # fmt: skip
VLLM_LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip

EXPECTED_TYPES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:request_success_total": "counter",
    "vllm:num_preemptions_total": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
}


def rendered(metrics: EngineMetrics | None = None, gauges: Gauges | None = None) -> str:
    return render(
        metrics or EngineMetrics(4096), gauges or Gauges(3, 7, 0.25), model_name="my-model"
    )


def test_bucket_constants_match_vllm() -> None:
    assert list(TTFT_BUCKETS) == VLLM_TTFT
    assert list(ITL_BUCKETS) == VLLM_ITL
    assert list(REQUEST_LATENCY_BUCKETS) == VLLM_LATENCY


def test_1_2_5_buckets() -> None:
    assert build_1_2_5_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    assert build_1_2_5_buckets(4096) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.001, "0.001"), (1, "1.0"), (2560.0, "2560.0"), (math.inf, "+Inf"), (1e6, "1e+06"),
     (0, "0.0"), (12.5, "12.5")],
)  # fmt: skip
def test_values_are_formatted_like_prometheus_client(value: float, text: str) -> None:
    assert format_value(value) == text


def test_every_family_has_help_type_and_the_vllm_labels() -> None:
    helps, types, samples = parse_exposition(rendered())
    for name, kind in EXPECTED_TYPES.items():
        assert types[name] == kind, name
        assert helps[name], name
    assert set(types) == set(METRIC_NAMES)
    assert samples
    for sample in samples:
        assert sample.labels["model_name"] == "my-model"
        assert sample.labels["engine"] == "0"


def test_names_are_exported_in_one_place() -> None:
    assert tuple(spec.name for spec in METRICS) == METRIC_NAMES
    assert set(EXPECTED_TYPES) <= set(METRIC_NAMES)
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)


def test_gauges_and_all_finish_reasons_present_from_start() -> None:
    _, _, samples = parse_exposition(rendered())
    values = {s.name: s.value for s in samples if not s.labels.get("finished_reason")}
    assert values["vllm:num_requests_running"] == 3
    assert values["vllm:num_requests_waiting"] == 7
    assert values["vllm:kv_cache_usage_perc"] == 0.25
    reasons = {
        s.labels["finished_reason"]: s.value
        for s in samples
        if s.name == "vllm:request_success_total"
    }
    assert reasons == dict.fromkeys(FINISHED_REASONS, 0.0)


@pytest.mark.parametrize(
    ("family", "bounds"),
    [
        ("vllm:time_to_first_token_seconds", VLLM_TTFT),
        ("vllm:inter_token_latency_seconds", VLLM_ITL),
        ("vllm:e2e_request_latency_seconds", VLLM_LATENCY),
        ("vllm:request_queue_time_seconds", VLLM_LATENCY),
        ("vllm:request_prompt_tokens", [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]),
        ("vllm:request_generation_tokens", [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]),
    ],
)
def test_histogram_buckets_and_le_labels(family: str, bounds: list[float]) -> None:
    text = rendered()
    _, _, samples = parse_exposition(text)
    les = [s.labels["le"] for s in samples if s.name == f"{family}_bucket"]
    assert les == [format_value(b) for b in bounds] + ["+Inf"]
    assert f'{family}_bucket{{engine="0",le="+Inf",model_name="my-model"}} 0.0' in text
    names = {s.name for s in samples if s.name.startswith(family)}
    assert names == {f"{family}_bucket", f"{family}_count", f"{family}_sum"}


def test_ttft_le_strings_are_prometheus_client_floats() -> None:
    _, _, samples = parse_exposition(rendered())
    les = [s.labels["le"] for s in samples if s.name == "vllm:time_to_first_token_seconds_bucket"]
    assert les[:3] == ["0.001", "0.005", "0.01"]
    assert "1.0" in les and "2560.0" in les and les[-1] == "+Inf"


def test_observations_land_in_cumulative_buckets() -> None:
    metrics = EngineMetrics(4096)
    for value in (0.0005, 0.001, 0.3, 5000.0):
        metrics.observe("vllm:time_to_first_token_seconds", value)
    metrics.inc("vllm:generation_tokens_total", 42)
    metrics.request_success["length"] += 2
    _, _, samples = parse_exposition(rendered(metrics))
    buckets = {
        s.labels["le"]: s.value
        for s in samples
        if s.name == "vllm:time_to_first_token_seconds_bucket"
    }
    assert buckets["0.001"] == 2  # le is inclusive
    assert buckets["0.25"] == 2
    assert buckets["0.5"] == 3
    assert buckets["2560.0"] == 3
    assert buckets["+Inf"] == 4
    by_name = {s.name: s.value for s in samples if "finished_reason" not in s.labels}
    assert by_name["vllm:time_to_first_token_seconds_count"] == 4
    assert by_name["vllm:time_to_first_token_seconds_sum"] == pytest.approx(5000.3015)
    assert by_name["vllm:generation_tokens_total"] == 42
    success = [s for s in samples if s.labels.get("finished_reason") == "length"]
    assert success[0].value == 2


def test_label_values_are_escaped() -> None:
    text = render(EngineMetrics(16), Gauges(0, 0, 0.0), model_name='we"ird\\name')
    _, _, samples = parse_exposition(text)
    assert samples[0].labels["model_name"] == 'we"ird\\name'


def test_parser_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_exposition("this is { not a sample\n")
