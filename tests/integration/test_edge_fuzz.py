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

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

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
