"""The HTTP surface against an in-process server: shapes, streaming, errors, fuzzed input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from llmfleet.local.simbackend import ServerThread, SimSettings, estimate_tokens, parse_exposition

MODEL = "sim-model"
SETTINGS = SimSettings(
    port=0,
    model="org/sim-model-8b",
    served_model_name=(MODEL,),
    max_model_len=1024,
    time_scale=0.001,
    name="api-test",
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(SETTINGS) as srv:
        yield srv


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never route loopback through a proxy from the environment
        yield session


def chat(max_tokens: int | None = 5, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi there"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {**body, **extra}


def sse_events(response: requests.Response) -> list[str]:
    """The data payloads of an SSE response, checking the framing on the way."""
    raw = response.content.decode()
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


# -- happy paths -----------------------------------------------------------------------------


def test_chat_completion_non_streaming_shape(server: ServerThread, http: requests.Session) -> None:
    r = http.post(f"{server.base_url}/v1/chat/completions", json=chat(max_tokens=12), timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 12
    assert body["usage"]["prompt_tokens"] == estimate_tokens("Hi there")
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 12


def test_completion_non_streaming_shape(server: ServerThread, http: requests.Session) -> None:
    body = {"model": MODEL, "prompt": "x" * 40, "max_tokens": 9}
    r = http.post(f"{server.base_url}/v1/completions", json=body, timeout=10)
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "text_completion"
    assert data["id"].startswith("cmpl-")
    assert data["choices"][0]["finish_reason"] == "length"
    assert len(data["choices"][0]["text"].split()) == 9
    assert data["usage"] == {
        "prompt_tokens": 10,
        "total_tokens": 19,
        "completion_tokens": 9,
        "prompt_tokens_details": None,
    }


def test_token_id_prompt_counts_ids(server: ServerThread, http: requests.Session) -> None:
    body = {"model": MODEL, "prompt": [1, 2, 3, 4, 5, 6, 7], "max_tokens": 1}
    r = http.post(f"{server.base_url}/v1/completions", json=body, timeout=10)
    assert r.json()["usage"]["prompt_tokens"] == 7


def test_max_completion_tokens_wins_for_chat(server: ServerThread, http: requests.Session) -> None:
    r = http.post(
        f"{server.base_url}/v1/chat/completions",
        json=chat(max_tokens=50, max_completion_tokens=4),
        timeout=10,
    )
    assert r.json()["usage"]["completion_tokens"] == 4


def test_without_max_tokens_length_is_drawn_and_stops(
    server: ServerThread, http: requests.Session
) -> None:
    for _ in range(3):
        r = http.post(f"{server.base_url}/v1/chat/completions", json=chat(None), timeout=30)
        body = r.json()
        tokens = body["usage"]["completion_tokens"]
        assert 1 <= tokens <= SETTINGS.max_model_len - body["usage"]["prompt_tokens"]
        expected = "length" if tokens == 1024 - body["usage"]["prompt_tokens"] else "stop"
        assert body["choices"][0]["finish_reason"] == expected


def test_request_id_header_is_echoed_and_used(server: ServerThread, http: requests.Session) -> None:
    r = http.post(
        f"{server.base_url}/v1/chat/completions",
        json=chat(),
        headers={"X-Request-Id": "client-id-42"},
        timeout=10,
    )
    assert r.headers["x-request-id"] == "client-id-42"
    assert r.json()["id"] == "chatcmpl-client-id-42"
    generated = http.get(f"{server.base_url}/v1/models", timeout=10).headers["x-request-id"]
    assert len(generated) == 32


def test_body_request_id_names_the_completion(server: ServerThread, http: requests.Session) -> None:
    r = http.post(
        f"{server.base_url}/v1/chat/completions", json=chat(request_id="mine"), timeout=10
    )
    assert r.json()["id"] == "chatcmpl-mine"
    assert r.headers["x-request-id"] != "mine"  # the header never comes from the body


def test_streaming_chat_shape_with_usage(server: ServerThread, http: requests.Session) -> None:
    body = chat(max_tokens=20, stream=True, stream_options={"include_usage": True})
    r = http.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": estimate_tokens("Hi there"),
        "total_tokens": estimate_tokens("Hi there") + 20,
        "completion_tokens": 20,
    }
    content = chunks[1:-1]
    assert len(content) == 20  # one token per chunk, exactly max_tokens
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in content)
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 19 + ["length"]
    assert all("usage" not in c for c in content)


def test_streaming_chat_without_usage(server: ServerThread, http: requests.Session) -> None:
    r = http.post(
        f"{server.base_url}/v1/chat/completions", json=chat(max_tokens=3, stream=True), timeout=10
    )
    chunks = [json.loads(e) for e in sse_events(r)[:-1]]
    assert len(chunks) == 1 + 3
    assert all(c["choices"] for c in chunks)


def test_streaming_completion_shape(server: ServerThread, http: requests.Session) -> None:
    body = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = http.post(f"{server.base_url}/v1/completions", json=body, timeout=10)
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks)
    text_chunks = chunks[:-1]
    assert len(text_chunks) == 6
    assert text_chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_continuous_usage_stats_counts_up(server: ServerThread, http: requests.Session) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = chat(max_tokens=4, stream=True, stream_options=options)
    r = http.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10)
    chunks = [json.loads(e) for e in sse_events(r)[:-1]]
    assert [c["usage"]["completion_tokens"] for c in chunks] == [0, 1, 2, 3, 4, 4]


def test_stream_yes_is_true_like_pydantic_lax_mode(
    server: ServerThread, http: requests.Session
) -> None:
    r = http.post(f"{server.base_url}/v1/chat/completions", json=chat(stream="yes"), timeout=10)
    assert r.status_code == 200
    assert sse_events(r)[-1] == "[DONE]"


def test_models_health_version(server: ServerThread, http: requests.Session) -> None:
    models = http.get(f"{server.base_url}/v1/models", timeout=10).json()
    assert models["object"] == "list"
    (entry,) = models["data"]
    assert entry["id"] == MODEL
    assert entry["object"] == "model"
    assert entry["owned_by"] == "vllm"
    assert entry["root"] == "org/sim-model-8b"
    assert entry["parent"] is None
    assert entry["max_model_len"] == 1024
    assert entry["permission"][0]["object"] == "model_permission"
    health = http.get(f"{server.base_url}/health", timeout=10)
    assert health.status_code == 200 and health.content == b""
    assert http.get(f"{server.base_url}/version", timeout=10).json() == {"version": "0.11.0"}


def test_metrics_endpoint_counts_requests(server: ServerThread, http: requests.Session) -> None:
    def successes() -> float:
        r = http.get(f"{server.base_url}/metrics", timeout=10)
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        _, _, samples = parse_exposition(r.text)
        return sum(
            s.value
            for s in samples
            if s.name == "vllm:request_success_total" and s.labels["model_name"] == MODEL
        )

    before = successes()
    http.post(f"{server.base_url}/v1/chat/completions", json=chat(max_tokens=2), timeout=10)
    assert successes() == before + 1


def test_requests_are_recorded_with_their_headers_for_loopback_readers(
    server: ServerThread, http: requests.Session
) -> None:
    http.get(f"{server.base_url}/health", timeout=10)
    http.get(f"{server.base_url}/metrics", timeout=10)
    r = http.post(f"{server.base_url}/v1/chat/completions", json=chat(max_tokens=1), timeout=10,
                  headers={"X-Request-Id": "rec-1", "Authorization": "Bearer sk-test",
                           "X-Custom": "one"})
    assert r.status_code == 200
    recorded = http.get(f"{server.base_url}/_sim/requests", timeout=10).json()["requests"]
    last = recorded[-1]
    assert (last["request_id"], last["method"], last["path"]) == (
        "rec-1", "POST", "/v1/chat/completions")
    assert ["Authorization", "Bearer sk-test"] in last["headers"]
    assert ["X-Custom", "one"] in last["headers"]
    # Probes, scrapes and reads of the simulator's own state are not requests to record.
    assert not {"/health", "/metrics", "/_sim/requests"} & {r["path"] for r in recorded}


def test_only_the_latest_requests_are_kept() -> None:
    from llmfleet.local.simbackend.server import RECENT_REQUESTS

    with ServerThread(SETTINGS) as srv, requests.Session() as http:
        http.trust_env = False
        for i in range(RECENT_REQUESTS + 5):
            http.get(f"{srv.base_url}/version", headers={"X-Request-Id": f"r{i}"}, timeout=10)
        recorded = http.get(f"{srv.base_url}/_sim/requests", timeout=10).json()["requests"]
    assert [r["request_id"] for r in recorded] == [f"r{i}" for i in range(5, RECENT_REQUESTS + 5)]


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.5", False), ("192.168.1.2", False), ("::ffff:10.0.0.5", False),
     ("fe80::1%eth0", False), ("", False), (None, False)],
)
def test_the_recorded_headers_are_shown_to_loopback_peers_only(remote, loopback) -> None:
    from llmfleet.local.simbackend.server import from_loopback

    assert from_loopback(remote) is loopback


def test_a_peer_from_another_machine_gets_403_not_the_headers() -> None:
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    from llmfleet.local.simbackend.openai_api import APIError
    from llmfleet.local.simbackend.server import build_app, requests_handler

    app = build_app(SETTINGS)
    for peer, allowed in ((("10.0.0.5", 4000), False), (("127.0.0.1", 4000), True)):
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None, peer=peer: (
            peer if name == "peername" else default)
        request = make_mocked_request("GET", "/_sim/requests", app=app, transport=transport)
        if allowed:
            assert asyncio.run(requests_handler(request)).status == 200
        else:
            with pytest.raises(APIError) as refused:
                asyncio.run(requests_handler(request))
            assert refused.value.status == 403


# -- errors ----------------------------------------------------------------------------------

NOT_UTF8 = b'{"model": "sim-model", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
# Lone surrogates: as JSON escapes (valid JSON, not Unicode text), and as UTF-8-encoded surrogate
# bytes (not UTF-8, but Python's json decodes them); in a field an error echoes, and in text.
LONE_SURROGATES = [
    b'{"model": "m\\ud800", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "m\xed\xa0\x80", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "%s", "messages": [{"role": "user", "content": "a\\udfffb"}]}' % MODEL.encode(),
    b'{"model": "%s", "request_id": "\\udc00", "messages": [{"role": "user", "content": "h"}]}'
    % MODEL.encode(),
]


@pytest.mark.parametrize(
    ("path", "payload", "status", "param"),
    [
        ("/v1/chat/completions", b"", 400, None),
        ("/v1/chat/completions", b"{not json", 400, None),
        ("/v1/chat/completions", b"[1, 2, 3]", 400, None),
        ("/v1/chat/completions", b'"just a string"', 400, None),
        ("/v1/chat/completions", b"null", 400, None),
        ("/v1/chat/completions", NOT_UTF8, 400, None),
        *(("/v1/chat/completions", body, 400, None) for body in LONE_SURROGATES),
        ("/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, 400, None),
        ("/v1/chat/completions", b'{"max_tokens": 1' + b"0" * 5000 + b"}", 400, None),
        ("/v1/chat/completions", {"model": MODEL}, 400, None),
        ("/v1/chat/completions", {"model": MODEL, "messages": "hello"}, 400, None),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"content": "x"}]}, 400,
         "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
         400, "messages"),
        ("/v1/chat/completions", chat(max_tokens=0), 400, "max_tokens"),
        ("/v1/chat/completions", chat(max_tokens=-3), 400, "max_tokens"),
        ("/v1/chat/completions", chat(max_tokens=10**30), 400, "max_tokens"),
        ("/v1/chat/completions", chat(max_tokens=1.5), 400, None),
        ("/v1/chat/completions", chat(max_tokens="lots"), 400, None),
        ("/v1/chat/completions", chat(max_tokens=1023), 400, "max_tokens"),
        ("/v1/chat/completions", chat(stream="maybe"), 400, None),
        ("/v1/chat/completions", chat(n=3), 400, "n"),
        ("/v1/chat/completions", chat(stream_options={"include_usage": True}), 400,
         "stream_options"),
        ("/v1/chat/completions", chat(model="gpt-4"), 404, "model"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user",
                                  "content": "word " * 2000}]}, 400, "messages"),
        ("/v1/completions", {"model": MODEL}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": 42}, 400, None),
        ("/v1/completions", {"model": MODEL, "prompt": []}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2**70}, 400,
         "max_tokens"),
        ("/v1/completions", {"model": "nope", "prompt": "hi"}, 404, "model"),
        ("/_sim/fault", {"mode": "explode"}, 400, "mode"),
        ("/_sim/fault", {"mode": "slow", "factor": -1}, 400, "mode"),
        ("/_sim/fault", b"[]", 400, None),
    ],
)  # fmt: skip
def test_bad_requests_get_vllm_error_shape(
    server: ServerThread,
    http: requests.Session,
    path: str,
    payload: bytes | dict,
    status: int,
    param: str | None,
) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    r = http.post(
        f"{server.base_url}{path}",
        data=data,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    assert error["type"] == {400: "BadRequestError", 404: "NotFoundError"}[status]
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param


def test_unknown_model_message_matches_vllm(server: ServerThread, http: requests.Session) -> None:
    r = http.post(f"{server.base_url}/v1/chat/completions", json=chat(model="x"), timeout=10)
    assert r.json()["error"]["message"] == "The model `x` does not exist."


def test_too_long_request_message_is_clear(server: ServerThread, http: requests.Session) -> None:
    r = http.post(f"{server.base_url}/v1/chat/completions", json=chat(max_tokens=1023), timeout=10)
    message = r.json()["error"]["message"]
    assert "maximum context length is 1024 tokens" in message
    assert "1023" in message


def test_unknown_path_and_wrong_method(server: ServerThread, http: requests.Session) -> None:
    r = http.get(f"{server.base_url}/v1/nothing-here", timeout=10)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = http.get(f"{server.base_url}/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
    assert "POST" in r.headers["Allow"]


def test_fuzzed_bodies_never_crash_or_hang(server: ServerThread, http: requests.Session) -> None:
    values: list[Any] = [None, True, 0, -1, 2**64, 1e308, "", "x", "a\r\nb: c", [], {}, [None],
                         {"a": 1}]  # fmt: skip
    fields = ["model", "messages", "max_tokens", "stream", "stream_options", "n", "min_tokens",
              "max_completion_tokens", "ignore_eos", "request_id"]  # fmt: skip
    for field in fields:
        for value in values:
            body = {**chat(max_tokens=2), field: value}
            r = http.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10)
            assert r.status_code in (200, 400, 404), (field, value, r.text)
            if r.status_code != 200:
                assert r.json()["error"]["code"] == r.status_code
    assert http.get(f"{server.base_url}/health", timeout=10).status_code == 200
    stats = http.get(f"{server.base_url}/_sim/stats", timeout=10).json()
    assert "500" not in stats["requests_by_status"]


def test_oversized_body_is_413_in_vllm_shape() -> None:
    small = SimSettings(port=0, served_model_name=(MODEL,), max_body_bytes=1024, name="tiny")
    with ServerThread(small) as srv, requests.Session() as session:
        session.trust_env = False
        body = chat(max_tokens=1)
        body["messages"][0]["content"] = "x" * 4096
        r = session.post(f"{srv.base_url}/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == 413
