"""Overload by design: when every node holds `load_balancing.max_requests_per_node`, a request
waits at the edge, in order, for a place (at most `queue_timeout_s`, at most `queue_depth`
waiting), then gets 429 "busy" with Retry-After in OpenAI's error shape, counted; the other
requests run as usual. Real nginx, gateway and simulated backend."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration


def _chat(endpoint: str, key: str) -> tuple[int, dict[str, str], dict, float]:
    body = json.dumps({"model": "Qwen/Qwen2.5-0.5B-Instruct", "max_tokens": 300,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = urllib.request.Request(endpoint + "/v1/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            status, headers, body = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, dict(error.headers), error.read()
    return status, headers, json.loads(body), time.monotonic() - started


def _six_at_once(box: dict) -> list[tuple[int, dict[str, str], dict, float]]:
    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(lambda _: _chat(box["endpoint"], box["api_key"]), range(6)))


def _gateway_counter(box: dict, name: str) -> float:
    with urllib.request.urlopen(box["gateway"]["url"] + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)


def _busy_count(exporter: str) -> float:
    with urllib.request.urlopen(exporter + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "llmfleet_edge_refusals_total" and s.labels == {"reason": "busy"})


def test_with_no_queue_a_full_fleet_answers_busy_at_once_and_counts_it(start_sandbox):
    box = start_sandbox(sandbox={"backends": 1},
                        load_balancing={"max_requests_per_node": 2, "busy_retry_after_s": 7,
                                        "queue_timeout_s": 0})
    answers = _six_at_once(box)

    statuses = sorted(status for status, _, _, _ in answers)
    assert statuses == [200, 200, 429, 429, 429, 429]
    for status, headers, body, _ in answers:
        if status == 429:
            assert headers["Retry-After"] == "7"
            assert body["error"]["code"] == "service_busy"
            assert body["error"]["type"] == "server_error"
            assert "busy" in body["error"]["message"]
        else:
            assert body["choices"][0]["message"]["content"]
    assert wait_until(lambda: _busy_count(box["edge-exporter"]["url"]) == 4, 15)


def test_the_edge_queue_holds_a_burst_until_places_free_up(start_sandbox):
    box = start_sandbox(sandbox={"backends": 1, "monitoring": False},
                        load_balancing={"max_requests_per_node": 2, "queue_timeout_s": 60})
    answers = _six_at_once(box)

    assert [status for status, _, _, _ in answers] == [200] * 6
    # Two ran at once; the other four waited at the edge for the places they freed.
    times = sorted(elapsed for _, _, _, elapsed in answers)
    assert times[-1] > 2 * times[0]
    assert _gateway_counter(box, "llmfleet_gateway_queue_wait_seconds_count") == 6
    assert _gateway_counter(box, "llmfleet_gateway_queue_refused_total") == 0


def test_a_request_that_waits_past_the_queue_timeout_is_answered_busy(start_sandbox):
    box = start_sandbox(sandbox={"backends": 1},
                        load_balancing={"max_requests_per_node": 2, "queue_timeout_s": 0.5,
                                        "busy_retry_after_s": 3})
    answers = _six_at_once(box)

    busy = [(headers, elapsed) for status, headers, _, elapsed in answers if status == 429]
    assert sorted(status for status, _, _, _ in answers) == [200, 200, 429, 429, 429, 429]
    # They waited their time at the edge, not longer than a request takes.
    served = min(elapsed for status, _, _, elapsed in answers if status == 200)
    assert all(0.5 <= elapsed < served for _, elapsed in busy)
    assert all(headers["Retry-After"] == "3" for headers, _ in busy)
    assert _gateway_counter(box, "llmfleet_gateway_queue_refused_total") == 4
    assert wait_until(lambda: _busy_count(box["edge-exporter"]["url"]) == 4, 15)


def test_past_the_queue_depth_the_rest_are_busy_at_once(start_sandbox):
    box = start_sandbox(sandbox={"backends": 1, "monitoring": False},
                        load_balancing={"max_requests_per_node": 2, "queue_timeout_s": 60,
                                        "queue_depth": 1})
    answers = _six_at_once(box)

    assert sorted(status for status, _, _, _ in answers) == [200, 200, 200, 429, 429, 429]
    assert _gateway_counter(box, "llmfleet_gateway_queue_refused_total") == 3


def test_without_a_limit_every_request_waits_its_turn_on_the_node(start_sandbox):
    box = start_sandbox(sandbox={"backends": 1, "max_num_seqs": 2, "monitoring": False})
    answers = _six_at_once(box)
    assert [status for status, _, _, _ in answers] == [200] * 6
