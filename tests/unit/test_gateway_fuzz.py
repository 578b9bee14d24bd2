"""The gateway's parsing of what clients send, fuzzed with hypothesis: the API key from the
headers, the request head nginx forwards, the lease lines, the key records read from Redis.
No input makes it raise, answer anything but a well-formed HTTP response with a status it
means, or log a raw key.

Bounded: each property runs a fixed number of examples (300, derandomized, so the default run
takes seconds and gives the same result each time). LLMFLEET_FUZZ_EXAMPLES=N runs N random
ones instead; `docs/faults.md` keeps what the longer runs tried and found.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmfleet.config import RateLimits
from llmfleet.gateway.answers import Answer, safe
from llmfleet.gateway.http import BadRequest, HttpConnection, parse_head
from llmfleet.gateway.keys import KEY_PATTERN, KEY_PREFIX
from llmfleet.gateway.leases import lease_from_syslog
from llmfleet.gateway.server import Gateway, _cached, extract_key, routes

FUZZ_EXAMPLES = int(os.environ.get("LLMFLEET_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                derandomize="LLMFLEET_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
keys = st.text(KEY_CHARS, min_size=43, max_size=43).map(lambda s: KEY_PREFIX + s)
# Header values as nginx hands them on: any byte, read as latin-1.
header_values = st.one_of(
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.text(max_size=300),
    keys,
    st.tuples(st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "", "Bearer\t"]),
              st.sampled_from([" ", "  ", "\t", ""]), keys | st.text(max_size=80))
    .map("".join),
)
header_sets = st.dictionaries(st.sampled_from(["authorization", "x-api-key", "host", "other"]),
                              header_values, max_size=3)
STATUSES = {200, 400, 401, 403, 404, 405, 431, 500}


def redis_down() -> Gateway:
    # Nothing listens on port 1: a decision that asks Redis fails fast and applies fail modes.
    return Gateway(RateLimits(), aioredis.Redis(port=1, socket_connect_timeout=0.05), 360)


@FUZZ
@given(header_sets)
@example({"authorization": "Bearer " + "k" * 10_240})
@example({"authorization": "Bearer \xff\xfe\x80"})
@example({"x-api-key": KEY_PREFIX + "é" * 43})
def test_key_extraction_never_raises_and_yields_only_well_formed_keys(headers):
    key, problem = extract_key(headers)
    if key is None:
        assert problem
    else:
        assert KEY_PATTERN.fullmatch(key) and problem == ""


@FUZZ
@given(keys, st.sampled_from(["Bearer", "bearer", "BEARER"]),
       st.text(" \t", max_size=3), st.text(" \t", max_size=3))
def test_a_well_formed_key_is_found_whatever_the_spacing_and_case(key, scheme, before, after):
    assert extract_key({"authorization": f"{before}{scheme} {key}{after}"}) == (key, "")
    assert extract_key({"x-api-key": f"{before}{key}{after}"}) == (key, "")


@settings(FUZZ, max_examples=max(30, FUZZ_EXAMPLES // 10))
@given(header_sets)
def test_a_decision_on_any_headers_is_an_answer_and_never_logs_a_raw_key(headers):
    gateway = redis_down()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("llmfleet.gateway")
    logger.addHandler(handler)
    try:
        answer = gateway.decide(headers)
        if not isinstance(answer, Answer):
            answer = asyncio.run(answer)
    finally:
        logger.removeHandler(handler)
    assert answer.status in (200, 401, 403)
    for value in answer.headers.values():
        assert "\r" not in value and "\n" not in value
    logged = " ".join(r.getMessage() for r in records)
    for value in headers.values():
        for candidate in re.findall(r"sk-lf-[A-Za-z0-9_-]{43}", value):
            assert candidate not in logged


@FUZZ
@given(st.binary(max_size=2048))
@example(b"GET /auth HTTP/1.1\r\nContent-Length: 5")
@example(b"GET /auth HTTP/1.1\r\n Folded: line")
@example(b"\r\n\r\n")
def test_any_request_head_is_parsed_or_refused_as_bad_request(head):
    try:
        request, _ = parse_head(head)
    except BadRequest as error:
        assert error.status in (400, 431)
    else:
        assert request.method and request.path is not None


class Transport:
    def __init__(self) -> None:
        self.written, self.closed = b"", False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


request_bytes = st.one_of(
    st.binary(max_size=4096),
    st.lists(st.one_of(
        st.just(b"GET /auth HTTP/1.1\r\n"), st.just(b"GET /health HTTP/1.1\r\n"),
        st.just(b"POST /auth HTTP/1.1\r\n"), st.just(b"\r\n"),
        header_values.map(lambda v: b"Authorization: " + v.encode("utf-8", "replace") + b"\r\n"),
        st.binary(max_size=64)), max_size=12).map(b"".join),
)


@settings(FUZZ, max_examples=max(30, FUZZ_EXAMPLES // 3))
@given(request_bytes, st.integers(min_value=1, max_value=64))
def test_the_server_answers_any_bytes_with_well_formed_responses(data, chunk):
    async def scenario() -> bytes:
        connection = HttpConnection(routes(redis_down()), set())
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        for start in range(0, len(data), chunk):
            if transport.closed:
                break
            connection.data_received(data[start:start + chunk])
            await asyncio.sleep(0)
        for _ in range(50):  # answers that needed the (absent) Redis
            if not connection.busy:
                break
            await asyncio.sleep(0.01)
        return transport.written

    written = asyncio.run(scenario())
    for status_line in re.findall(rb"HTTP/1\.1 (\d{3}) ", written):
        assert int(status_line) in STATUSES
    assert written.count(b"HTTP/1.1 ") == len(re.findall(rb"Content-Length: \d+\r\n", written))


@FUZZ
@given(st.binary(max_size=512))
def test_any_lease_datagram_is_a_lease_or_nothing(datagram):
    lease = lease_from_syslog(datagram)
    assert lease is None or (lease and lease == lease.strip())


@FUZZ
@given(st.dictionaries(st.sampled_from([b"client", b"tier", b"revoked", b"requests",
                                        b"window_ms", b"max_concurrent", b"other"]),
                       st.binary(max_size=40), max_size=7))
def test_any_record_in_redis_is_read_or_skipped(fields):
    record = _cached(fields, 0.0)
    if record is not None:
        assert isinstance(record.client, str) and isinstance(record.tier, str)
        assert all(isinstance(v, int) for v in record.overrides.values())


@FUZZ
@given(st.text(max_size=600))
def test_messages_put_into_nginx_json_need_no_escaping(message):
    cleaned = safe(message)
    assert len(cleaned) <= 300
    assert not set(cleaned) & set('"\\\r\n{}$')
