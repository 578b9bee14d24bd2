"""The load generator end to end, against a small fake vLLM server started in each test."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from llmfleet.local.loadgen import (
    LoadSpec,
    LoadTargetError,
    ProgressSnapshot,
    run_load_sync,
)
from llmfleet.local.loadgen.cli import add_arguments, run
from llmfleet.local.loadgen.runner import retry_delay_s

MODEL = "fake-model"


class FakeVLLM:
    """An OpenAI-compatible server that answers like vLLM with ignore_eos.

    ``mode``: ``ok`` (normal), ``drop`` (closes the connection mid-stream), ``truncated``
    (ends the stream cleanly but without ``data: [DONE]``), ``fail`` (503 with an error
    body) or ``hang`` (never answers until the server stops). ``hold_until=N`` answers
    nothing until N requests have arrived, then everything.
    """

    def __init__(
        self,
        mode: str = "ok",
        *,
        token_delay_s: float = 0.0,
        send_usage: bool = True,
        upstreams: list[str] | None = None,
        hold_until: int | None = None,
    ) -> None:
        self.mode = mode
        self.token_delay_s = token_delay_s
        self.send_usage = send_usage
        self.upstreams = upstreams or []
        self.hold_until = hold_until
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.hanging = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._arrived = threading.Condition()

    def wait_for_requests(self, count: int, timeout_s: float = 30.0) -> None:
        """Block the calling thread until ``count`` requests have arrived."""
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.bodies) >= count, timeout_s), (
                f"{len(self.bodies)} of {count} requests arrived"
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.generate)
        app.router.add_post("/v1/completions", self.generate)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._stopping is not None and self._released is not None:
            # Release hanging and held handlers so shutdown is quick.
            self._stopping.set()
            self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    def _response_headers(self) -> dict[str, str]:
        if not self.upstreams:
            return {}
        return {"x-llmfleet-upstream": self.upstreams[(len(self.bodies) - 1) % len(self.upstreams)]}

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._arrived:
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            self._arrived.notify_all()
        if self.hold_until is not None:
            assert self._released is not None
            if len(self.bodies) >= self.hold_until:
                self._released.set()
            await self._released.wait()
        chat = request.path.endswith("/chat/completions")
        n = int(body["max_tokens"])
        usage = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
        if self.mode == "fail":
            error = {"message": "no capacity", "type": "ServiceUnavailable", "code": 503}
            return web.json_response({"error": error}, status=503)
        if self.mode == "hang":
            self.hanging += 1
            assert self._stopping is not None
            await self._stopping.wait()
            return web.Response(status=500)
        if not body.get("stream"):
            text = "".join(f"t{i} " for i in range(n))
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            payload = {"id": "x", "model": body["model"], "choices": [choice], "usage": usage}
            return web.json_response(payload, headers=self._response_headers())
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **self._response_headers()}
        )
        await resp.prepare(request)

        async def event(data: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(data)}\n\n".encode())

        def chunk(content: str, finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": content}
            else:
                choice["text"] = content
            return {"id": "x", "object": "chunk", "model": body["model"], "choices": [choice]}

        if chat:
            first = chunk("")
            first["choices"][0]["delta"]["role"] = "assistant"
            await event(first)
        for i in range(n):
            if self.mode == "drop" and i == n // 2:
                assert request.transport is not None
                request.transport.abort()
                return resp
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            await event(chunk(f"t{i} ", "length" if i == n - 1 else None))
        if self.send_usage and (body.get("stream_options") or {}).get("include_usage"):
            await event({"id": "x", "object": "chunk", "choices": [], "usage": usage})
        if self.mode != "truncated":
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@contextlib.contextmanager
def serve(server: FakeVLLM) -> Iterator[FakeVLLM]:
    """Run ``server`` on its own event loop thread; always stop it, even if a test fails."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-vllm", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeVLLM]]:
    """Start fake servers: ``fake(mode="drop", token_delay_s=...)``."""
    with contextlib.ExitStack() as stack:
        yield lambda mode="ok", **kwargs: stack.enter_context(serve(FakeVLLM(mode, **kwargs)))


def free_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spec_for(server: FakeVLLM, **overrides: Any) -> LoadSpec:
    values: dict[str, Any] = {
        "url": server.url,
        "requests": 12,
        "concurrency": 4,
        "output_tokens": "uniform:3-9",
        "prompt_tokens": "fixed:8",
        "max_duration_s": 30.0,
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return LoadSpec(**values)


def test_streaming_chat_counts_tokens_ttft_and_model(fake: Callable[..., FakeVLLM]) -> None:
    server = fake(token_delay_s=0.002)
    report = run_load_sync(spec_for(server))

    assert (report.total_requests, report.ok, report.errors) == (12, 12, 0)
    assert report.all_ok and not report.stopped_by_deadline
    assert report.errors_by_status == {}
    assert report.requests_by_backend == {f"127.0.0.1:{server.port}": 12}
    assert report.model == MODEL  # discovered via GET /v1/models
    assert [r.index for r in report.records] == list(range(12))
    for record in report.records:
        assert record.status == 200
        assert record.output_tokens == record.max_tokens
        assert record.ttft_s is not None
        assert 0 < record.ttft_s < record.latency_s
    sent = sorted(server.bodies, key=lambda b: b["messages"][0]["content"])
    assert all(b["stream"] and b["stream_options"] == {"include_usage": True} for b in sent)
    assert sorted(b["max_tokens"] for b in server.bodies) == sorted(
        r.max_tokens for r in report.records
    )
    assert report.output_tokens_total == sum(r.max_tokens for r in report.records)
    assert report.latency_p50_s is not None and report.ttft_p50_s is not None
    assert report.ttft_p50_s < report.latency_p50_s
    assert report.requests_per_s > 0 and report.output_tokens_per_s > 0
    json.dumps(report.to_dict(include_records=True))


def test_a_stream_records_the_gap_between_successive_chunks(
    fake: Callable[..., FakeVLLM],
) -> None:
    server = fake(token_delay_s=0.02)
    report = run_load_sync(spec_for(server, requests=2, output_tokens="fixed:6"))
    for record in report.records:
        assert len(record.itl_s) == 5
        assert all(0.015 < gap < 1.0 for gap in record.itl_s)
        # The first token arrives once; every later one is an ITL gap.
        assert record.ttft_s is not None
        assert record.ttft_s + sum(record.itl_s) <= record.latency_s
    itl = report.figures["itl"]
    assert itl is not None and 0.015 < itl.median < 1.0


def test_stream_without_usage_counts_content_chunks(fake: Callable[..., FakeVLLM]) -> None:
    server = fake(send_usage=False)
    report = run_load_sync(spec_for(server, requests=5))
    assert report.ok == 5
    assert all(r.output_tokens == r.max_tokens for r in report.records)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_non_streaming_ttft_equals_latency(fake: Callable[..., FakeVLLM], endpoint: str) -> None:
    server = fake()
    report = run_load_sync(spec_for(server, stream=False, endpoint=endpoint, requests=6))
    assert report.ok == 6
    assert all("stream_options" not in b and b["stream"] is False for b in server.bodies)
    for record in report.records:
        assert record.ttft_s == record.latency_s
        assert record.output_tokens == record.max_tokens


def test_streaming_completions_endpoint(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()
    report = run_load_sync(spec_for(server, endpoint="completions", requests=4, model="m1"))
    assert report.ok == 4
    assert all("prompt" in b and b["model"] == "m1" for b in server.bodies)
    assert all(r.output_tokens == r.max_tokens for r in report.records)


@pytest.mark.parametrize("mode", ["drop", "truncated"])
def test_stream_without_done_is_broken(fake: Callable[..., FakeVLLM], mode: str) -> None:
    server = fake(mode)
    report = run_load_sync(spec_for(server, requests=6, output_tokens="fixed:10"))
    assert report.ok == 0 and not report.all_ok
    assert report.broken_streams == 6
    assert report.errors_by_status == {"stream_broken": 6}
    assert all(r.status == "stream_broken" for r in report.records)
    if mode == "drop":
        # Tokens that arrived before the drop still count.
        assert all(r.output_tokens == 5 for r in report.records)
    assert report.latency_p50_s is None  # percentiles cover successful requests only


def test_http_error_is_recorded_with_message(fake: Callable[..., FakeVLLM]) -> None:
    server = fake("fail")
    report = run_load_sync(spec_for(server, requests=7))
    assert report.ok == 0
    assert report.errors_by_status == {"503": 7}
    assert all(r.status == 503 and r.error == "no capacity" for r in report.records)
    assert report.broken_streams == 0


def test_hanging_server_run_stops_at_max_duration(fake: Callable[..., FakeVLLM]) -> None:
    server = fake("hang")
    spec = spec_for(server, requests=50, concurrency=3, max_duration_s=1.0, timeout_s=30.0)
    started = time.monotonic()
    report = run_load_sync(spec)
    elapsed = time.monotonic() - started

    # Not before the deadline; the bound above only has to tell the deadline (1 s) from the
    # request timeout (30 s), so a busy machine cannot break it.
    assert 0.9 <= elapsed < 10
    assert report.stopped_by_deadline and not report.all_ok
    assert report.total_requests == 3  # only the in-flight ones; no new ones after the deadline
    assert report.errors_by_status == {"deadline": 3}
    assert server.hanging == 3


def test_per_request_timeout(fake: Callable[..., FakeVLLM]) -> None:
    server = fake("hang")
    spec = spec_for(server, requests=2, concurrency=2, timeout_s=0.3, max_duration_s=20.0)
    started = time.monotonic()
    report = run_load_sync(spec)
    assert time.monotonic() - started < 10  # the timeout (0.3 s), not max_duration (20 s)
    assert report.errors_by_status == {"timeout": 2}
    assert not report.stopped_by_deadline
    assert all(0.25 <= r.latency_s < 10 for r in report.records)


def test_ramp_spreads_client_starts(fake: Callable[..., FakeVLLM]) -> None:
    # Each request takes ~0.5 s, longer than the ramp, so every client sends exactly one.
    server = fake(token_delay_s=0.1)
    spec = spec_for(server, requests=4, concurrency=4, ramp_s=0.6, output_tokens="fixed:5")
    report = run_load_sync(spec)
    assert report.ok == 4
    starts = sorted(r.start_s for r in report.records)
    for start, expected in zip(starts, [0.0, 0.15, 0.3, 0.45], strict=True):
        assert start == pytest.approx(expected, abs=0.1)


def test_backend_comes_from_upstream_header(fake: Callable[..., FakeVLLM]) -> None:
    # nginx lists every upstream it tried; the last one answered.
    server = fake(upstreams=["10.0.0.1:8000", "10.0.0.9:8000, 10.0.0.2:8000"])
    report = run_load_sync(spec_for(server, requests=10, concurrency=1))
    assert report.requests_by_backend == {"10.0.0.1:8000": 5, "10.0.0.2:8000": 5}


def test_api_key_and_headers_are_sent(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()
    run_load_sync(spec_for(server, requests=2, api_key="sk-test", headers={"X-Trace": "1"}))
    assert all(h["Authorization"] == "Bearer sk-test" for h in server.headers)
    assert all(h["X-Trace"] == "1" for h in server.headers)


def test_same_seed_same_requests_across_runs(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()

    def sequence(seed: int) -> list[tuple[int, int]]:
        spec = spec_for(server, seed=seed, output_tokens="heavy", prompt_tokens="uniform:1-50")
        report = run_load_sync(spec)
        return [(r.max_tokens, r.prompt_tokens) for r in report.records]

    first = sequence(7)
    assert sequence(7) == first
    assert sequence(8) != first


def test_progress_callback_sees_every_request(fake: Callable[..., FakeVLLM]) -> None:
    server = fake()
    snapshots: list[ProgressSnapshot] = []
    run_load_sync(spec_for(server, requests=8), progress=snapshots.append)
    assert snapshots[-1].finished
    assert (snapshots[-1].done, snapshots[-1].total, snapshots[-1].errors) == (8, 8, 0)
    assert [s.done for s in snapshots[:-1]] == list(range(1, 9))


@pytest.mark.parametrize("model", [None, MODEL])
def test_connection_refused_is_one_clear_error(model: str | None) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LoadTargetError, match=r"cannot connect to .*Connection refused"):
        run_load_sync(LoadSpec(url=url, model=model, requests=3))


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmfleet load")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_json_report_and_exit_codes(
    fake: Callable[..., FakeVLLM], capsys: pytest.CaptureFixture[str]
) -> None:
    good = fake()
    assert run(cli_args("--url", good.url, "-n", "5", "-c", "2", "--json")) == 0
    out = capsys.readouterr().out
    data = json.loads(out)  # stdout holds nothing but the JSON report
    assert (data["total_requests"], data["ok"], data["errors"]) == (5, 5, 0)

    bad = fake("fail")
    assert run(cli_args("--url", bad.url, "-n", "3")) == 1
    text = capsys.readouterr().out
    assert "503: 3" in text and "E2EL" in text


def test_cli_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert run(cli_args("--url", url, "-n", "2")) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"llmfleet load: cannot connect to {url}: Connection refused"
    ]


class ClosesFirstConnections:
    """A server that reads the first `drop` requests and closes their connections without an
    answer (an nginx worker that leaves after a reload), then answers every request."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.seen = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        body = json.dumps({"choices": [{"message": {"content": "hi"}}],
                           "usage": {"completion_tokens": 1}}).encode()
        with connection, contextlib.suppress(OSError):
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length")), b"0"))
                while len(buffer) < length:
                    buffer += connection.recv(65536)
                buffer = buffer[length:]
                self.seen += 1
                if self.seen <= self.drop:
                    return
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def plain_requests_to(listener: socket.socket, *, requests: int):
    """`requests` plain requests one after another to a test server; the server then closes."""
    try:
        return run_load_sync(LoadSpec(url=f"http://127.0.0.1:{listener.getsockname()[1]}",
                                      model="m", requests=requests, concurrency=1, stream=False,
                                      max_duration_s=20, timeout_s=5))
    finally:
        listener.close()


class ClosesAfterEachAnswer:
    """A server that answers each request with a keep-alive response and closes its connection
    right behind it, in the same segment (TCP_CORK): an nginx worker leaving after a reload."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        body = json.dumps({"choices": [{"message": {"content": "hi"}}],
                           "usage": {"completion_tokens": 1}}).encode()
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                with connection:
                    buffer = b""
                    while b"\r\n\r\n" not in buffer:
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                    else:
                        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                                           b"\r\nContent-Length: %d\r\n\r\n%s"
                                           % (len(body), body))
                        connection.shutdown(socket.SHUT_WR)
                        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
                        self.answered += 1


def test_a_connection_the_server_closed_behind_its_answer_is_not_sent_on_again() -> None:
    server = ClosesAfterEachAnswer()
    report = plain_requests_to(server.listener, requests=20)
    assert report.ok == 20
    assert report.retried == 0  # every request found its connection closed, not failed


@pytest.mark.parametrize(("drop", "retried", "ok"), [(2, 1, 1), (3, 1, 0)])
def test_a_connection_closed_before_any_answer_is_retried_like_the_openai_clients(
        drop: int, retried: int, ok: int) -> None:
    server = ClosesFirstConnections(drop)
    report = plain_requests_to(server.listener, requests=1)
    assert (report.retried, report.ok) == (retried, ok)
    assert report.records[0].retries == 2
    assert server.seen == 3
    # Each retry waited as the OpenAI client does (at least 0.375 s, then 0.75 s): at once,
    # it would take a pooled connection the same reload had closed.
    assert report.records[0].latency_s >= 0.375 + 0.75


def test_retries_back_off_as_the_openai_python_client_does() -> None:
    # openai-python's _calculate_retry_timeout: 0.5 s doubling, at most 8 s, less 0-25 %.
    assert [retry_delay_s(n, 0.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert retry_delay_s(0, 0.999999) == pytest.approx(0.375)
