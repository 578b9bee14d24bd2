"""vLLM's metric contract in llmfleet.observability.vllm_metrics: the buckets as vLLM defines
them, one spec per name, and importable by the runtime without the local tools."""

from __future__ import annotations

import subprocess
import sys

from llmfleet.observability.vllm_metrics import (
    ITL_BUCKETS,
    METRIC_NAMES,
    METRICS,
    REQUEST_LATENCY_BUCKETS,
    TTFT_BUCKETS,
    build_1_2_5_buckets,
    histogram_buckets,
)

# Straight from vllm/v1/metrics/loggers.py, written out again so a typo in the module fails here.
VLLM_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
             7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
VLLM_ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0]  # fmt: skip
VLLM_LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip


def test_bucket_constants_match_vllm() -> None:
    assert list(TTFT_BUCKETS) == VLLM_TTFT
    assert list(ITL_BUCKETS) == VLLM_ITL
    assert list(REQUEST_LATENCY_BUCKETS) == VLLM_LATENCY


def test_token_histograms_use_1_2_5_buckets_up_to_the_model_length() -> None:
    assert build_1_2_5_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    assert build_1_2_5_buckets(4096) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
    prompt = next(spec for spec in METRICS if spec.name == "vllm:request_prompt_tokens")
    assert histogram_buckets(prompt, 1024) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    ttft = next(spec for spec in METRICS if spec.name == "vllm:time_to_first_token_seconds")
    assert histogram_buckets(ttft, 1024) == TTFT_BUCKETS


def test_names_are_listed_once_and_follow_prometheus_conventions() -> None:
    assert tuple(spec.name for spec in METRICS) == METRIC_NAMES
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    for spec in METRICS:
        assert spec.name.startswith("vllm:")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert (spec.kind == "histogram") == bool(spec.buckets or spec.token_buckets), spec.name


def test_the_runtime_can_import_it_without_the_local_tools() -> None:
    code = ("import sys, llmfleet.observability.vllm_metrics, llmfleet.observability.edge_exporter;"
            "print([m for m in sys.modules if m.startswith('llmfleet.local')])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"
