"""The access-log line format, its parser, and what the server logs."""

from __future__ import annotations

import requests

from llmfleet.local.simbackend import (
    ServerThread,
    SimSettings,
    format_access_log_line,
    parse_access_log_line,
)

EXAMPLE = (
    "2026-11-28T01:02:03.123Z backend-1 request_id=chatcmpl-abc method=POST "
    "path=/v1/chat/completions status=200 stream=true prompt_tokens=12 completion_tokens=40 "
    "finish_reason=length duration_ms=523.1"
)


def test_parse_example_line() -> None:
    assert parse_access_log_line(EXAMPLE + "\n") == {
        "ts": "2026-11-28T01:02:03.123Z",
        "backend": "backend-1",
        "request_id": "chatcmpl-abc",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "stream": True,
        "prompt_tokens": 12,
        "completion_tokens": 40,
        "finish_reason": "length",
        "duration_ms": 523.1,
    }


def test_other_lines_are_not_requests() -> None:
    startup = (
        "2026-11-28T01:02:03.123Z backend-1 simbackend listening on http://127.0.0.1:8001 "
        "pid=1 model=m"
    )
    for line in ("", "garbage", startup, "Traceback (most recent call last):",
                 EXAMPLE.replace("status=200", "status=abc")):  # fmt: skip
        assert parse_access_log_line(line) is None


def test_format_round_trips_and_neutralises_unsafe_values() -> None:
    line = format_access_log_line(
        "backend-2",
        {
            "request_id": 'evil id="x" status=500',
            "method": "POST",
            "path": "/v1/completions",
            "status": 400,
            "stream": False,
            "duration_ms": 1.25,
        },
    )
    assert "\n" not in line
    parsed = parse_access_log_line(line)
    assert parsed is not None
    assert parsed["backend"] == "backend-2"
    assert parsed["status"] == 400
    assert parsed["stream"] is False
    assert parsed["prompt_tokens"] is None
    assert parsed["finish_reason"] == "-"
    assert " " not in parsed["request_id"] and "=" not in parsed["request_id"]


def test_server_logs_one_line_per_api_request_but_not_probes() -> None:
    settings = SimSettings(port=0, served_model_name=("m",), time_scale=0.001, name="log-test")
    with ServerThread(settings) as server, requests.Session() as http:
        http.trust_env = False
        base = server.base_url
        for _ in range(3):
            http.get(f"{base}/health", timeout=5)
            http.get(f"{base}/metrics", timeout=5)
            http.get(f"{base}/_sim/stats", timeout=5)
        body = {"model": "m", "messages": [{"role": "user", "content": "abcdefgh"}]}
        http.post(f"{base}/v1/chat/completions", json={**body, "max_tokens": 4}, timeout=5)
        http.post(
            f"{base}/v1/chat/completions",
            json={**body, "max_tokens": 2, "stream": True},
            timeout=5,
        )
        http.post(f"{base}/v1/chat/completions", json={**body, "model": "x"}, timeout=5)
        http.get(f"{base}/nowhere", timeout=5)
    records = [parse_access_log_line(line) for line in server.lines]
    assert all(r is not None for r in records), server.lines
    assert [(r["path"], r["status"]) for r in records] == [
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 404),
        ("/nowhere", 404),
    ]
    first, streamed = records[0], records[1]
    assert first["backend"] == "log-test"
    assert first["request_id"].startswith("chatcmpl-")
    assert (first["stream"], first["prompt_tokens"], first["completion_tokens"]) == (False, 2, 4)
    assert first["finish_reason"] == "length"
    assert (streamed["stream"], streamed["completion_tokens"]) == (True, 2)
    assert all(r["duration_ms"] >= 0 for r in records)
