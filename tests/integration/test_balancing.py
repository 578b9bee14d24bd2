"""What least_conn does that round-robin does not, shown on one deterministic scenario.

One backend holds a long stream; short requests then arrive one at a time. least_conn counts
the stream as a connection in use and sends every short request to the other backend;
round-robin alternates regardless, so about half of them wait beside the stream. The
round_robin case is run too: it shows the scenario tells the two strategies apart.
How much least_conn saves on heavy-tailed lengths is a measurement, not a test: see
bench/balancing.py.
"""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.integration

UPSTREAM = "X-LLMFleet-Upstream"  # the sandbox's edge names the backend that answered
SHORT_REQUESTS = 10


def chat(max_tokens: int, *, stream: bool = False) -> dict:
    return {"model": "Qwen/Qwen2.5-0.5B-Instruct", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("strategy", ["least_conn", "round_robin"])
def test_requests_go_past_a_backend_busy_with_a_long_stream_under_least_conn_only(
        start_sandbox, strategy):
    box = start_sandbox(strategy, sandbox={"monitoring": False},
                        load_balancing={"strategy": strategy})
    url = box["endpoint"] + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {box['api_key']}"}
    with requests.Session() as http:
        http.trust_env = False
        # 3,000 tokens at an L4's pace: about 90 s, far longer than the short requests take.
        long = http.post(url, json=chat(3000, stream=True), headers=headers, stream=True,
                         timeout=30)
        try:
            assert long.status_code == 200
            busy = long.headers[UPSTREAM]
            # Generating. The iterator is kept: dropping it would close the stream.
            chunks = long.iter_content(chunk_size=None)
            next(chunks)
            served_by = []
            for _ in range(SHORT_REQUESTS):  # one at a time: each ends before the next
                short = http.post(url, json=chat(1), headers=headers, timeout=30)
                assert short.status_code == 200, short.text
                served_by.append(short.headers[UPSTREAM])
            # Still generating after the last short request: it held its backend throughout.
            stats = http.get(f"http://{busy}/_sim/stats", timeout=5).json()
            assert stats["open_streams"] == 1, stats
        finally:
            long.close()
    addresses = {b["url"].removeprefix("http://") for b in box["backends"]}
    assert busy in addresses and set(served_by) <= addresses
    beside_the_stream = served_by.count(busy)
    if strategy == "least_conn":
        assert beside_the_stream == 0, served_by
    else:
        assert beside_the_stream >= SHORT_REQUESTS // 2 - 1, served_by
