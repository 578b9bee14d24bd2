"""The gateway's HTTP/1.1 server: just what nginx's auth_request and a metrics scraper send.

nginx asks once per client request, so the gateway's own cost is added to every request at
the edge. aiohttp spent about 0.1 ms of CPU on each (a task, a request object, routing,
middlewares); requests from nginx arrive in bursts, and in one process each waits for the
ones before it, so that cost showed up several times over in the edge's median. This server
parses the request line and headers in one pass, calls the handler, and writes the answer:
when the handler answers at once (a key served from the cache), no task and no extra turn of
the event loop are involved.

Only what the gateway needs: GET and HEAD, no request bodies, keep-alive, requests on one
connection answered in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import cast

log = logging.getLogger("llmfleet.gateway")

# nginx forwards the client's headers, each line up to 32 kB (large_client_header_buffers
# 4 32k), so a whole request head can reach 128 kB; anything larger is not from nginx.
MAX_HEAD_BYTES = 160 * 1024
# Longer than nginx keeps an idle upstream connection (keepalive_timeout in the upstream
# block), so nginx always closes first and never sends on a connection being closed here.
IDLE_TIMEOUT_S = 120.0

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
           500: "Internal Server Error"}


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names; the first of repeated headers

    @property
    def head_only(self) -> bool:
        return self.method == "HEAD"


Handler = Callable[[Request], "bytes | Awaitable[bytes]"]


def response(status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *,
             head_only: bool = False, close: bool = False) -> bytes:
    """One whole HTTP/1.1 response, ready to write."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")
    return head if head_only else head + body


class BadRequest(ValueError):
    """The bytes are not a request this server answers; the connection is closed after."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[Request, bool]:
    """The request in `head` (up to, not including, the blank line), and whether the client
    keeps the connection open after the answer."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # No whitespace in or around a name (that includes obsolete line folding): RFC 9112.
        if not colon or not name or name != name.strip() or b" " in name:
            raise BadRequest(400, "malformed header line")
        # latin-1 maps every byte, so any bytes nginx passes on decode; a key is ASCII, and
        # anything else then fails its pattern and gets a clear 401.
        headers.setdefault(name.decode("latin-1").lower(),
                           value.strip(b" \t").decode("latin-1"))
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise BadRequest(400, "request bodies are not accepted")
    method = parts[0].decode("latin-1")
    path = parts[1].decode("latin-1").partition("?")[0]
    connection = headers.get("connection", "").lower()
    if parts[2] == b"HTTP/1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    return Request(method, path, headers), keep_alive


class HttpConnection(asyncio.Protocol):
    """One client connection (usually one of nginx's keep-alive connections)."""

    def __init__(self, handler: Handler, connections: set[HttpConnection]):
        self.handler = handler
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False  # an answer is being awaited; later requests wait in the buffer
        self.pending: asyncio.Future[bytes] | None = None  # that answer
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        # Nobody is left to answer (nginx gave up on the request: its client went away).
        # A decision still waiting, for a place on the fleet say, stops and gives it back.
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        self.last_active = time.monotonic()
        if self.busy:
            if len(self.buffer) > MAX_HEAD_BYTES and self.transport:
                self.transport.pause_reading()  # until the answer in progress is written
            return
        self._serve()

    def _serve(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._refuse(BadRequest(431, "request head too large"))
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            try:
                request, keep_alive = parse_head(head)
            except BadRequest as error:
                self._refuse(error)
                return
            try:
                answer = self.handler(request)
            except Exception as error:
                answer, keep_alive = _failed(request, error), False
            if isinstance(answer, bytes):
                self._send(answer, keep_alive)
            else:
                self.busy = True
                task = self.pending = asyncio.ensure_future(answer)
                task.add_done_callback(
                    lambda done, r=request, k=keep_alive: self._answered(done, r, k))

    def _answered(self, task: asyncio.Future[bytes], request: Request, keep_alive: bool
                  ) -> None:
        self.busy, self.pending = False, None
        if task.cancelled():
            answer, keep_alive = response(500, close=True), False
        elif (error := task.exception()) is not None:
            answer, keep_alive = _failed(request, error), False
        else:
            answer = task.result()
        self._send(answer, keep_alive)
        if self.transport is not None:
            self.transport.resume_reading()
            self._serve()

    def _send(self, answer: bytes, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(answer)
        self.last_active = time.monotonic()
        if not keep_alive:
            self.transport.close()
            self.transport = None

    def _refuse(self, error: BadRequest) -> None:
        self._send(response(error.status, [("Content-Type", "text/plain")],
                            str(error).encode(), close=True), keep_alive=False)


def _failed(request: Request, error: BaseException) -> bytes:
    # The exception's type only: its message could quote a header, and so an API key.
    log.error("%s %s failed: %s", request.method, request.path, type(error).__name__)
    return response(500, close=True)


async def close_idle(connections: set[HttpConnection], idle_s: float = IDLE_TIMEOUT_S) -> None:
    """Close connections that have said nothing for `idle_s`, for as long as the server runs."""
    while True:
        await asyncio.sleep(idle_s / 4)  # a period, not synchronisation
        cutoff = time.monotonic() - idle_s
        for connection in list(connections):
            if not connection.busy and connection.last_active < cutoff and connection.transport:
                connection.transport.close()
