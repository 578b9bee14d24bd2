"""The edge, fuzzed with schemathesis from an OpenAPI document of what it serves (written here
for that purpose: the OpenAI endpoints the kit proxies, and the edge's /health). Requests go
through the real nginx, gateway and simulated backends with a valid key. Whatever schemathesis
sends, valid or not (wrong types for every field, negative or absurd max_tokens, n and
temperature, missing fields, odd strings), the answer is not a 5xx, an error is OpenAI-shaped
JSON, and no raw key shows up in any log of the sandbox.

Bounded: up to FUZZ_EXAMPLES cases per operation (default 60, derandomized so that each run
sends the same; LLMFLEET_FUZZ_EXAMPLES=N for a longer, random run, with pytest's --timeout=0),
valid and invalid ones (schemathesis' positive and negative modes), no deadline. The counts go
to the test's output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet.config import validate
from llmfleet.local.sandbox import down, up
from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.ports import free_port

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = int(os.environ.get("LLMFLEET_FUZZ_EXAMPLES", "60"))
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"

_sampling = {
    "model": {"type": "string", "example": MODEL},
    "max_tokens": {"type": "integer", "nullable": True},
    "n": {"type": "integer"},
    "temperature": {"type": "number"},
    "top_p": {"type": "number"},
    "stream": {"type": "boolean"},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "seed": {"type": "integer"},
    "user": {"type": "string"},
}
_error = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": "string", "nullable": True}, "code": {"nullable": True}}}}}
_json = {"application/json": {"schema": {"type": "object"}}}
_responses = {"200": {"description": "ok", "content": _json},
              "default": {"description": "an OpenAI-shaped error",
                          "content": {"application/json": {"schema": _error}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "llmfleet edge", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": {"security": [], "responses": {
            "200": {"description": "the edge lives", "content": _json}}}},
        "/v1/models": {"get": {"responses": _responses}},
        "/v1/chat/completions": {"post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["model", "messages"], "properties": {
                    **_sampling,
                    "max_completion_tokens": {"type": "integer", "nullable": True},
                    "messages": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["role", "content"], "properties": {
                            "role": {"type": "string",
                                     "enum": ["system", "user", "assistant"]},
                            "content": {"type": "string"}}}}}}}}},
            "responses": _responses}},
        "/v1/completions": {"post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["model", "prompt"], "properties": {
                    **_sampling,
                    "prompt": {"oneOf": [{"type": "string"},
                                         {"type": "array", "items": {"type": "string"}}]}}}}}},
            "responses": _responses}},
    },
}

schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("edge-fuzz")
    config = validate({
        "model": {"max_model_len": 2048},
        "sandbox": {"monitoring": False, "time_scale": 0.01, **{
            k: free_port() for k in ("edge_port", "base_port", "redis_port", "gateway_port")}},
    }, "test")
    try:
        box = up(config, state_dir, edge_port_explicit=True, supervise=False).to_json()
        box["key"], _ = key_store(state_dir).create("fuzz", "enterprise")
        box["seen"] = {"requests": 0, "statuses": {}}
        yield box
        # No raw key in any log the sandbox wrote while it was fuzzed.
        for log in state_dir.rglob("*.log"):
            assert box["key"] not in log.read_text(errors="replace"), log
    finally:
        down(state_dir)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize="LLMFLEET_FUZZ_EXAMPLES" not in os.environ)
def test_no_request_gets_a_server_error_or_a_non_json_refusal(case, edge):
    response = case.call(base_url=edge["endpoint"],
                         headers={"Authorization": f"Bearer {edge['key']}"}, timeout=30)
    edge["seen"]["requests"] += 1
    statuses = edge["seen"]["statuses"]
    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert response.status_code < 500, (case.method, case.path, case.body,
                                        response.text[:300])
    if response.status_code >= 400:
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith("application/json"), response.text[:300]
        body = response.json()
        assert "error" in body, (response.status_code, case.method, case.path, case.headers,
                                 response.text[:300])
        assert body["error"]["message"] and "type" in body["error"], response.text[:300]


def test_the_fuzzed_edge_still_serves(edge, capsys):
    answer = requests.get(edge["endpoint"] + "/v1/models", timeout=10,
                          headers={"Authorization": f"Bearer {edge['key']}"})
    assert answer.status_code == 200
    with capsys.disabled():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(edge["seen"]["statuses"].items()))
        print(f"\n[fuzz] {edge['seen']['requests']} requests through the edge; {statuses}")


# -- bodies no schema describes: invalid UTF-8, lone surrogates, deep nesting, huge sizes ----

BODY_EXAMPLES = int(os.environ.get("LLMFLEET_FUZZ_EXAMPLES", "150"))
PATHS = ("/v1/chat/completions", "/v1/completions")
# Byte sequences that are not UTF-8: bytes that never occur, overlong forms, encoded
# surrogates, code points past U+10FFFF, lone continuation bytes, cut sequences.
NOT_UTF8 = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
            b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xbf",
            b"\xe2\x82", b"\xf0\x9f\x98")
# Valid UTF-8 and valid JSON, but not Unicode text: lone surrogates as JSON escapes.
SURROGATES = ("\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ud800\\u0041", "a\\udfffb")
SLOT = "\x00SLOT\x00"  # where the odd bytes go in an otherwise valid request
MAX_BODY = 1024 * 1024  # load_balancing.max_body_size, 1m


def _template(path: str, where: str, stream: bool) -> bytes:
    """A valid request for `path` with SLOT inside one string (or as one key) of it."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 1, "stream": stream}
    if path.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    if where == "model":
        body["model"] = MODEL + SLOT
    elif where == "text":
        if "messages" in body:
            body["messages"][0]["content"] = "hi " + SLOT
        else:
            body["prompt"] = "hi " + SLOT
    elif where == "key":
        body[SLOT] = 1
    elif where in ("request_id", "user", "stop"):
        body[where] = SLOT
    return json.dumps(body).encode()


def _fill(template: bytes, odd: bytes) -> bytes:
    return template.replace(json.dumps(SLOT)[1:-1].encode(), odd)


@st.composite
def odd_bodies(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(kind, path, body): each kind is a body no client library would send."""
    path = draw(st.sampled_from(PATHS))
    kind = draw(st.sampled_from(("not-utf8", "random-bytes", "surrogate", "deep", "huge",
                                 "big-number")))  # big-number: big-integer or big-float
    stream = draw(st.booleans())
    where = draw(st.sampled_from(("model", "text", "key", "request_id", "user", "stop")))
    if kind == "not-utf8":
        # Joined, pieces can make a valid sequence (b"\xe2\x82" + b"\x80" is U+2080).
        odd = draw(st.lists(st.sampled_from(NOT_UTF8), min_size=1, max_size=4).map(
            b"".join).filter(_not_utf8))
        return kind, path, _fill(_template(path, where, stream), b"x" + odd + b"y")
    if kind == "random-bytes":
        raw = draw(st.binary(min_size=1, max_size=4096).filter(_not_utf8))
        return kind, path, raw
    if kind == "surrogate":
        odd = draw(st.sampled_from(SURROGATES)).encode()
        return kind, path, _fill(_template(path, where, stream), odd)
    if kind == "deep":
        depth = draw(st.integers(1, 200_000))
        opener, closer = draw(st.sampled_from(((b"[", b"]"), (b'{"a":', b"}"))))
        nested = opener * depth + b"1" + closer * depth
        at = draw(st.sampled_from(("body", "text", "extra", "messages")))
        if at == "body":
            return kind, path, nested
        template = _fill(_template(path, where, stream), b"")
        if at == "messages" and path.endswith("chat/completions"):
            return kind, path, template.replace(b'"messages": [', b'"messages": [' + nested
                                                + b", ", 1)
        return kind, path, template.replace(b"{", b'{"nested": ' + nested + b", ", 1)
    if kind == "huge":
        size = draw(st.sampled_from((200_000, MAX_BODY - 4096, MAX_BODY + 1, 3 * MAX_BODY)))
        shape = draw(st.sampled_from(("text", "messages", "keys")))
        template = _template(path, "text", stream)
        if shape == "text":
            return kind, path, _fill(template, b"a" * size)
        if shape == "messages" and path.endswith("chat/completions"):
            one = b'{"role": "user", "content": "a"}, '
            return kind, path, template.replace(b'"messages": [', b'"messages": ['
                                                + one * (size // len(one)), 1)
        keys = b"".join(b'"k%d": 0, ' % n for n in range(size // 12))
        return kind, path, template.replace(b"{", b"{" + keys, 1)
    # big-number: an integer past what int() converts (4300 digits), or a float past what a
    # double holds; in a field the request reads, or one it ignores.
    digits = draw(st.integers(4301, 200_000))
    integer = draw(st.booleans())
    number = (draw(st.sampled_from((b"1" * digits, b"-" + b"9" * digits))) if integer else
              draw(st.sampled_from((b"1" + b"0" * digits + b".5", b"1e" + b"9" * 400))))
    field = draw(st.sampled_from((b"max_tokens", b"temperature", b"seed", b"extra")))
    body = _template(path, "text", stream).replace(b"hi " + json.dumps(SLOT)[1:-1].encode(),
                                                   b"hi", 1)
    body = body.replace(b'"max_tokens": 1', b'"max_tokens": ' + number if field == b"max_tokens"
                        else b'"max_tokens": 1, "' + field + b'": ' + number, 1)
    return "big-integer" if integer else "big-float", path, body


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# Kinds no valid request can be: they must be refused (4xx), not only "not a 5xx".
MUST_REFUSE = {"not-utf8", "random-bytes", "big-integer"}


@given(case=odd_bodies())
@settings(max_examples=BODY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize="LLMFLEET_FUZZ_EXAMPLES" not in os.environ)
def test_odd_bodies_are_refused_as_openai_shaped_json(case, edge):
    kind, path, body = case
    response = requests.post(edge["endpoint"] + path, data=body, timeout=60, headers={
        "Authorization": f"Bearer {edge['key']}", "Content-Type": "application/json"})
    edge["seen"]["odd"] = edge["seen"].get("odd", 0) + 1
    kinds = edge["seen"].setdefault("odd_kinds", {})
    kinds[kind, response.status_code] = kinds.get((kind, response.status_code), 0) + 1
    where = (kind, path, len(body), body[:120], response.status_code, response.text[:300])
    assert response.status_code < 500, where
    if kind in MUST_REFUSE or len(body) > MAX_BODY:
        assert 400 <= response.status_code < 500, where
    if len(body) > MAX_BODY:
        assert response.status_code == 413, where
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), where
        error = response.json()["error"]
        assert error["message"] and error["type"] and "code" in error, where
    elif not response.headers["content-type"].startswith("text/event-stream"):
        assert response.json()["choices"], where


def test_the_edge_and_its_backends_survive_odd_bodies(edge, capsys):
    """After the odd bodies: every process of the sandbox still runs and the edge serves."""
    for backend in edge["backends"]:
        os.kill(backend["pid"], 0)  # still there (the fixture does not restart them)
    answer = requests.post(edge["endpoint"] + "/v1/chat/completions", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"Authorization": f"Bearer {edge['key']}"})
    assert answer.status_code == 200, answer.text[:300]
    with capsys.disabled():
        kinds = ", ".join(f"{kind} {status}: {count}" for (kind, status), count
                          in sorted(edge["seen"].get("odd_kinds", {}).items()))
        print(f"\n[fuzz] {edge['seen'].get('odd', 0)} odd bodies through the edge "
              f"(kind status: count); {kinds}")
