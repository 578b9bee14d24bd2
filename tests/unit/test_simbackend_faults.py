"""Fault injection in-process: slow, hang, unavailable, and the control endpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from llmfleet.local.simbackend import ServerThread, SimSettings

MODEL = "fault-model"
# 10 ms per step whatever the batch, no prefill cost: a 10-token request takes >= 100 ms.
SETTINGS = SimSettings(
    port=0,
    served_model_name=(MODEL,),
    prefill_ms_per_token=0.0,
    itl_ms=10.0,
    itl_ms_per_running_seq=0.0,
    name="fault-test",
)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(SETTINGS) as srv:
        yield srv


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def chat(max_tokens: int = 10) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
    }


def set_fault(http: requests.Session, base: str, **fault: Any) -> dict[str, Any]:
    r = http.post(f"{base}/_sim/fault", json=fault, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def timed_chat(http: requests.Session, base: str, max_tokens: int = 10) -> float:
    started = time.monotonic()
    r = http.post(f"{base}/v1/chat/completions", json=chat(max_tokens), timeout=30)
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] == max_tokens
    return time.monotonic() - started


def test_fault_mode_round_trip(server: ServerThread, http: requests.Session) -> None:
    base = server.base_url
    assert http.get(f"{base}/_sim/fault", timeout=5).json() == {"mode": "none"}
    assert set_fault(http, base, mode="slow", factor=3) == {"mode": "slow", "factor": 3.0}
    assert http.get(f"{base}/_sim/fault", timeout=5).json() == {"mode": "slow", "factor": 3.0}
    assert set_fault(http, base, mode="slow") == {"mode": "slow", "factor": 5.0}
    assert set_fault(http, base, mode="none") == {"mode": "none"}


def test_slow_multiplies_step_time(server: ServerThread, http: requests.Session) -> None:
    base = server.base_url
    normal = timed_chat(http, base)
    set_fault(http, base, mode="slow", factor=5)
    slow = timed_chat(http, base)
    # Steps sleep to absolute deadlines, so 10 steps of 50 ms can never take less than 0.5 s.
    assert slow >= 0.5
    assert normal < slow
    set_fault(http, base, mode="none")


def test_lifting_slow_applies_to_the_step_in_flight(
    server: ServerThread, http: requests.Session
) -> None:
    base = server.base_url
    set_fault(http, base, mode="slow", factor=100_000)  # one step would take ~17 minutes
    result: dict[str, Any] = {}

    def request() -> None:
        with requests.Session() as own:
            own.trust_env = False
            result["elapsed"] = timed_chat(own, base, max_tokens=3)

    thread = threading.Thread(target=request)
    thread.start()
    wait_until(
        lambda: http.get(f"{base}/_sim/stats", timeout=5).json()["running"] == 1,
        what="the request to be running",
    )
    set_fault(http, base, mode="none")
    thread.join(timeout=10)
    assert result["elapsed"] < 5


def test_hang_holds_requests_but_health_and_metrics_answer(
    server: ServerThread, http: requests.Session
) -> None:
    base = server.base_url
    set_fault(http, base, mode="hang")
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(f"{base}/v1/chat/completions", json=chat(), timeout=0.3)
    assert http.get(f"{base}/health", timeout=5).status_code == 200
    assert http.get(f"{base}/metrics", timeout=5).status_code == 200
    assert http.get(f"{base}/_sim/fault", timeout=5).json() == {"mode": "hang"}

    result: dict[str, Any] = {}

    def held_request() -> None:
        with requests.Session() as own:
            own.trust_env = False
            result["response"] = own.post(f"{base}/v1/chat/completions", json=chat(3), timeout=30)

    thread = threading.Thread(target=held_request)
    thread.start()
    wait_until(
        lambda: http.get(f"{base}/_sim/stats", timeout=5).json()["hung_requests"] == 1,
        what="the request to be held",
    )
    assert "response" not in result
    set_fault(http, base, mode="none")
    thread.join(timeout=10)
    assert result["response"].status_code == 200
    assert result["response"].json()["usage"]["completion_tokens"] == 3


def test_hang_freezes_streams_in_flight(server: ServerThread, http: requests.Session) -> None:
    base = server.base_url
    body = {**chat(max_tokens=100), "stream": True}  # ~1 s of tokens when healthy
    url = f"{base}/v1/chat/completions"
    with (
        http.post(url, json=body, stream=True, timeout=30) as patient,
        requests.post(url, json=body, stream=True, timeout=(5, 0.3)) as impatient,
    ):
        patient_lines = patient.iter_lines()
        impatient_lines = impatient.iter_lines()
        assert next(patient_lines).startswith(b"data: ")
        assert next(impatient_lines).startswith(b"data: ")
        set_fault(http, base, mode="hang")
        # Tokens stop flowing: a reader with a 0.3 s read timeout gives up before [DONE].
        with pytest.raises(requests.exceptions.ConnectionError):
            for line in impatient_lines:
                assert line != b"data: [DONE]"
        set_fault(http, base, mode="none")
        events = [line for line in patient_lines if line]
    assert events[-1] == b"data: [DONE]"
    chunks = [e for e in events if e.startswith(b'data: {"id"')]
    assert len(chunks) == 100  # the role chunk was read before; 100 content chunks follow


def test_unavailable_answers_503_in_vllm_shape(
    server: ServerThread, http: requests.Session
) -> None:
    base = server.base_url
    set_fault(http, base, mode="unavailable")
    r = http.post(f"{base}/v1/chat/completions", json=chat(), timeout=5)
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == 503 and error["type"] == "ServiceUnavailableError"
    health = http.get(f"{base}/health", timeout=5)
    assert health.status_code == 503 and health.json()["error"]["code"] == 503
    assert http.get(f"{base}/metrics", timeout=5).status_code == 200
    set_fault(http, base, mode="none")
    assert http.get(f"{base}/health", timeout=5).status_code == 200
    assert http.post(f"{base}/v1/chat/completions", json=chat(), timeout=5).status_code == 200


def test_unhealthy_fails_the_health_check_and_still_serves(
    server: ServerThread, http: requests.Session
) -> None:
    base = server.base_url
    set_fault(http, base, mode="unhealthy")
    assert http.get(f"{base}/health", timeout=5).status_code == 503
    assert http.post(f"{base}/v1/chat/completions", json=chat(), timeout=5).status_code == 200
    assert http.get(f"{base}/metrics", timeout=5).status_code == 200
    set_fault(http, base, mode="none")
    assert http.get(f"{base}/health", timeout=5).status_code == 200


def test_exit_fault_calls_the_exit_hook_after_answering(
    server: ServerThread, http: requests.Session
) -> None:
    # In-process the hook records the code; test_simbackend_cli checks a real process dies.
    assert set_fault(http, server.base_url, mode="exit", code=7) == {"mode": "exit", "code": 7}
    wait_until(lambda: server.exit_codes == [7], what="the exit hook")


@pytest.mark.parametrize(
    "fault",
    [{"mode": "nope"}, {"mode": "slow", "factor": 0}, {"mode": "slow", "factor": "x"},
     {"mode": "exit", "code": 300}, {"mode": "exit", "code": True}, {}],
)  # fmt: skip
def test_invalid_fault_is_refused(
    server: ServerThread, http: requests.Session, fault: dict[str, Any]
) -> None:
    r = http.post(f"{server.base_url}/_sim/fault", json=fault, timeout=5)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "BadRequestError"
    assert http.get(f"{server.base_url}/_sim/fault", timeout=5).json() == {"mode": "none"}
