"""Overload by design: when every node holds `load_balancing.max_requests_per_node`, the edge
answers at once 429 "busy" with Retry-After in OpenAI's error shape, and counts it; the other
requests run as usual."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration


def _chat(endpoint: str, key: str) -> tuple[int, dict[str, str], dict]:
    body = json.dumps({"model": "Qwen/Qwen2.5-0.5B-Instruct", "max_tokens": 300,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = urllib.request.Request(endpoint + "/v1/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def _busy_count(exporter: str) -> float:
    with urllib.request.urlopen(exporter + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "llmfleet_edge_refusals_total" and s.labels == {"reason": "busy"})


def test_a_full_fleet_answers_busy_with_retry_after_and_counts_it(start_sandbox):
    box = start_sandbox(sandbox={"backends": 1},
                        load_balancing={"max_requests_per_node": 2, "busy_retry_after_s": 7})
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _chat(box["endpoint"], box["api_key"]), range(6)))

    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 200, 429, 429, 429, 429]
    for status, headers, body in answers:
        if status == 429:
            assert headers["Retry-After"] == "7"
            assert body["error"]["code"] == "service_busy"
            assert body["error"]["type"] == "server_error"
            assert "busy" in body["error"]["message"]
        else:
            assert body["choices"][0]["message"]["content"]
    assert wait_until(lambda: _busy_count(box["edge-exporter"]["url"]) == 4, 15)


def test_without_a_limit_every_request_waits_its_turn_on_the_node(start_sandbox):
    box = start_sandbox(sandbox={"backends": 1, "max_num_seqs": 2, "monitoring": False})
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _chat(box["endpoint"], box["api_key"]), range(6)))
    assert [status for status, _, _ in answers] == [200] * 6
