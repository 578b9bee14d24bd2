"""The gateway's own HTTP/1.1 server: parsing what nginx sends, keep-alive, order of answers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llmfleet.gateway.http import (
    MAX_HEAD_BYTES,
    BadRequest,
    HttpConnection,
    Request,
    parse_head,
    response,
)

KEY = "sk-lf-" + "A" * 43


class FakeTransport:
    """What HttpConnection uses of a transport: it records the bytes written."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def connect(handler) -> tuple[HttpConnection, FakeTransport, set[HttpConnection]]:
    connections: set[HttpConnection] = set()
    connection = HttpConnection(handler, connections)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport, connections


def echo_path(request: Request) -> bytes:
    return response(200, [("x-path", request.path)])


def test_nginx_subrequest_head_is_parsed_with_lower_case_names():
    head = (b"GET /auth?x=1 HTTP/1.1\r\nHost: llmfleet_gateway\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nX-Api-Key:  other \r\n"
            b"authorization: Bearer second")
    request, keep_alive = parse_head(head)
    assert (request.method, request.path) == ("GET", "/auth")
    assert request.headers["authorization"] == f"Bearer {KEY}"  # the first of repeated headers
    assert request.headers["x-api-key"] == "other"
    assert keep_alive


@pytest.mark.parametrize(("version", "connection", "keep_alive"), [
    (b"HTTP/1.1", [], True), (b"HTTP/1.1", [b"Connection: close"], False),
    (b"HTTP/1.0", [], False), (b"HTTP/1.0", [b"Connection: keep-alive"], True),
])
def test_keep_alive_follows_the_http_version_and_connection_header(version, connection,
                                                                   keep_alive):
    _, kept = parse_head(b"\r\n".join([b"GET /health " + version, b"Host: x", *connection]))
    assert kept is keep_alive


def test_non_ascii_header_bytes_are_read_not_refused():
    request, _ = parse_head(b"GET /auth HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\x80")
    assert request.headers["authorization"] == "Bearer \xff\xfe\x80"


@pytest.mark.parametrize("head", [
    b"GET /auth\r\nHost: x",  # no version
    b"GET /auth HTTP/2\r\nHost: x",
    b"GET /auth HTTP/1.1\r\nHost x",  # no colon
    b"GET /auth HTTP/1.1\r\nHost : x",  # space before the colon
    b"GET /auth HTTP/1.1\r\nHost: x\r\n folded",  # obsolete line folding
    b"GET /auth HTTP/1.1\r\nContent-Length: 5",
    b"GET /auth HTTP/1.1\r\nTransfer-Encoding: chunked",
])
def test_anything_but_a_bodiless_http1_request_is_a_400(head):
    with pytest.raises(BadRequest) as caught:
        parse_head(head)
    assert caught.value.status == 400


def test_a_request_split_across_reads_is_answered_once_whole():
    connection, transport, _ = connect(echo_path)
    connection.data_received(b"GET /he")
    connection.data_received(b"alth HTTP/1.1\r\nHost: x\r\n")
    assert transport.written == b""
    connection.data_received(b"\r\n")
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-path: /health\r\n" in transport.written
    assert not transport.closed


def test_pipelined_requests_are_answered_in_order_even_when_the_first_waits():
    async def scenario() -> bytes:
        first_may_answer = asyncio.Event()

        async def slow(request: Request) -> bytes:
            await first_may_answer.wait()
            return echo_path(request)

        def handler(request: Request):
            return slow(request) if request.path == "/first" else echo_path(request)

        connection, transport, _ = connect(handler)
        connection.data_received(b"GET /first HTTP/1.1\r\n\r\nGET /second HTTP/1.1\r\n\r\n")
        assert transport.written == b""  # the second waits behind the first
        first_may_answer.set()
        deadline = asyncio.get_running_loop().time() + 5
        while transport.written.count(b"HTTP/1.1 200") < 2:
            assert asyncio.get_running_loop().time() < deadline, transport.written
            await asyncio.sleep(0)
        return transport.written

    written = asyncio.run(scenario())
    assert written.index(b"x-path: /first") < written.index(b"x-path: /second")


def test_connection_close_is_honoured_after_the_answer():
    connection, transport, connections = connect(echo_path)
    connection.data_received(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 200")
    assert transport.closed
    connection.connection_lost(None)
    assert not connections


def test_an_endless_head_gets_431_and_the_connection_closed():
    connection, transport, _ = connect(echo_path)
    connection.data_received(b"GET /auth HTTP/1.1\r\nX-Long: " + b"a" * MAX_HEAD_BYTES)
    assert transport.written.startswith(b"HTTP/1.1 431")
    assert transport.closed


def test_a_failing_handler_gives_500_and_logs_no_header_value(caplog):
    def broken(request: Request) -> bytes:
        raise KeyError(request.headers["authorization"])

    connection, transport, _ = connect(broken)
    with caplog.at_level(logging.ERROR, logger="llmfleet.gateway"):
        connection.data_received(
            f"GET /auth HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    assert transport.written.startswith(b"HTTP/1.1 500")
    assert transport.closed
    assert "GET /auth failed: KeyError" in caplog.text
    assert KEY not in caplog.text


def test_head_requests_get_the_headers_and_no_body():
    whole = response(200, [("Content-Type", "application/json")], b'{"status":"ok"}')
    head = response(200, [("Content-Type", "application/json")], b'{"status":"ok"}',
                    head_only=True)
    assert whole == head + b'{"status":"ok"}'
    assert b"Content-Length: 15\r\n" in head


def test_a_lost_connection_stops_the_answer_it_was_waiting_for():
    async def scenario() -> bool:
        started, stopped = asyncio.Event(), asyncio.Event()

        async def waits(request: Request) -> bytes:
            started.set()
            try:
                await asyncio.sleep(60)  # a place on the fleet that never comes
            except asyncio.CancelledError:
                stopped.set()
                raise
            return response(200)

        connection, transport, _ = connect(waits)
        connection.data_received(b"GET /auth HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        connection.connection_lost(None)  # nginx closed it: its client went away
        await asyncio.wait_for(stopped.wait(), 5)
        return transport.written == b""

    assert asyncio.run(scenario())
