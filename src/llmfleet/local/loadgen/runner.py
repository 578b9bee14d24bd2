"""Asyncio clients that send the planned requests and record what happened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from yarl import URL

from .progress import ProgressCallback, ProgressSnapshot
from .report import LoadReport, RequestRecord, build_report
from .workload import (
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    Distribution,
    RequestPlan,
    generate_plans,
    parse_distribution,
)

__all__ = ["UPSTREAM_HEADER", "LoadSpec", "LoadTargetError", "run_load", "run_load_sync"]

# The nginx edge copies $upstream_addr into this response header.
UPSTREAM_HEADER = "x-llmfleet-upstream"
MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 10_000

Endpoint = Literal["chat", "completions"]
_PATHS: dict[str, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


class LoadTargetError(RuntimeError):
    """The target could not be used at all (unreachable, or its model list unusable)."""


@dataclass
class LoadSpec:
    """What load to send, and where. Every run is bounded by ``requests`` and ``max_duration_s``.

    ``output_tokens`` and ``prompt_tokens`` take a :class:`Distribution` or its string form
    (see :func:`parse_distribution`); strings are parsed on construction, so a bad value
    fails here with a ValueError. ``model=None`` asks ``GET /v1/models`` once and uses the
    first id. ``api_key`` becomes ``Authorization: Bearer ...`` unless ``headers`` already
    has an Authorization header. ``ignore_eos`` adds vLLM's ``ignore_eos`` so a real vLLM
    generates exactly ``max_tokens`` like the simulated backend does.
    """

    url: str = "http://127.0.0.1:8080"
    model: str | None = None
    requests: int = 100
    concurrency: int = 10
    ramp_s: float = 0.0
    stream: bool = True
    endpoint: Endpoint = "chat"
    seed: int = 0
    output_tokens: Distribution | str = DEFAULT_OUTPUT_TOKENS
    prompt_tokens: Distribution | str = DEFAULT_PROMPT_TOKENS
    max_duration_s: float = 120.0
    timeout_s: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    ignore_eos: bool = False
    # Like the official OpenAI clients (two retries by default): a request whose connection
    # closed before any answer is sent again. It happens on a keep-alive connection that an
    # nginx worker closes after a reload; the report counts the retries.
    max_retries: int = 2

    def __post_init__(self) -> None:
        self.output_tokens = parse_distribution(self.output_tokens)
        self.prompt_tokens = parse_distribution(self.prompt_tokens)
        url = URL(self.url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"url must be an http(s) URL such as http://127.0.0.1:8080, got {self.url!r}"
            )
        _check_int("requests", self.requests, 1, MAX_REQUESTS)
        _check_int("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        _check_int("max_retries", self.max_retries, 0, 10)
        _check_float("ramp_s", self.ramp_s, allow_zero=True)
        _check_float("max_duration_s", self.max_duration_s, allow_zero=False)
        _check_float("timeout_s", self.timeout_s, allow_zero=False)
        if self.endpoint not in _PATHS:
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {self.endpoint!r}")

    @property
    def base_url(self) -> URL:
        """The server root: trailing slashes and a trailing ``/v1`` are dropped."""
        path = self.url.rstrip("/")
        path = path.removesuffix("/v1")
        return URL(path)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _check_float(name: str, value: float, *, allow_zero: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


def _authority(url: URL) -> str:
    host = url.host or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{url.port}"


def _served_by(upstream: str) -> str:
    """The address that finally answered, from an nginx ``$upstream_addr`` value.

    nginx lists every upstream it tried (``a:80, b:80``, groups joined by `` : ``);
    the last one produced the response.
    """
    parts = [p.strip() for p in upstream.replace(" : ", ",").split(",")]
    return next((p for p in reversed(parts) if p), upstream.strip())


def _error_message(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    return body.strip()[:300]


@dataclass(slots=True)
class _Attempt:
    """Mutable state of one request, so a failure part-way keeps what was already seen."""

    backend: str
    status: int | str | None = None
    http_status: int | None = None
    streaming: bool = False
    done_at: float | None = None  # loop time of data: [DONE], or of the full JSON body
    ttft_at: float | None = None
    chunks: int = 0
    usage_tokens: int | None = None
    error: str | None = None
    retries: int = 0


async def _discover_model(session: aiohttp.ClientSession, base: URL, deadline: float) -> str:
    url = base / "v1" / "models"
    try:
        async with asyncio.timeout_at(deadline), session.get(url) as resp:
            text = await resp.text(errors="replace")
            if resp.status != 200:
                raise LoadTargetError(
                    f"GET {url} returned HTTP {resp.status}: {_error_message(text)} "
                    "(name the model explicitly to skip this lookup)"
                )
    except TimeoutError:
        raise LoadTargetError(f"GET {url} timed out") from None
    except aiohttp.ClientConnectorError as exc:
        raise LoadTargetError(f"cannot connect to {base}: {_reason(exc)}") from None
    except aiohttp.ClientError as exc:
        raise LoadTargetError(f"GET {url} failed: {exc}") from None
    try:
        models = json.loads(text)["data"]
        return str(models[0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise LoadTargetError(f"GET {url} listed no model id (name the model explicitly)") from None


async def _check_reachable(base: URL, deadline: float) -> None:
    """Open and close one TCP connection, so a wrong URL fails once instead of per request."""
    try:
        async with asyncio.timeout_at(deadline):
            _, writer = await asyncio.open_connection(base.host, base.port)
    except TimeoutError:
        raise LoadTargetError(f"cannot connect to {base}: timed out") from None
    except OSError as exc:
        raise LoadTargetError(f"cannot connect to {base}: {_os_reason(exc)}") from None
    writer.close()
    # The server may reset the idle connection; that is not this check's business.
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    return _os_reason(exc.os_error)


def _os_reason(exc: OSError) -> str:
    # asyncio puts "Connect call failed (...)" in strerror; the errno text is the useful part.
    return os.strerror(exc.errno) if exc.errno else str(exc)


class _Run:
    def __init__(
        self,
        spec: LoadSpec,
        session: aiohttp.ClientSession,
        model: str,
        deadline: float,
        progress: ProgressCallback | None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.model = model
        self.deadline = deadline
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self.url = spec.base_url.with_path(spec.base_url.path.rstrip("/") + _PATHS[spec.endpoint])
        self.default_backend = _authority(spec.base_url)
        assert isinstance(spec.output_tokens, Distribution)
        assert isinstance(spec.prompt_tokens, Distribution)
        self.plans = generate_plans(
            spec.requests, spec.seed, spec.output_tokens, spec.prompt_tokens
        )
        self.records: list[RequestRecord] = []
        self.errors = 0
        self.in_flight = 0
        self.started = 0.0

    def snapshot(self, finished: bool = False) -> ProgressSnapshot:
        done = len(self.records)
        return ProgressSnapshot(
            done=done,
            total=self.spec.requests,
            ok=done - self.errors,
            errors=self.errors,
            in_flight=self.in_flight,
            elapsed_s=self.loop.time() - self.started,
            finished=finished,
        )

    async def run(self) -> float:
        """Send everything; return the wall time in seconds."""
        self.started = self.loop.time()
        workers = [
            asyncio.create_task(self.worker(i))
            for i in range(min(self.spec.concurrency, self.spec.requests))
        ]
        tasks = [*workers, *([asyncio.create_task(self.tick())] if self.progress else [])]
        try:
            await asyncio.gather(*workers)
        finally:
            # Also reached on an error or cancellation: leave no task running behind.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        wall = self.loop.time() - self.started
        if self.progress:
            self.progress(self.snapshot(finished=True))
        return wall

    async def tick(self) -> None:
        # Progress also moves while every request is slow, not only when one finishes.
        assert self.progress is not None
        while True:
            await asyncio.sleep(1.0)
            self.progress(self.snapshot())

    async def worker(self, number: int) -> None:
        delay = number * self.spec.ramp_s / self.spec.concurrency
        if delay > 0:
            await asyncio.sleep(min(delay, max(0.0, self.deadline - self.loop.time())))
        while self.loop.time() < self.deadline:
            plan = next(self.plans, None)
            if plan is None:
                return
            self.in_flight += 1
            try:
                record = await self.send(plan)
            finally:
                self.in_flight -= 1
            self.records.append(record)
            if not record.ok:
                self.errors += 1
            if self.progress:
                self.progress(self.snapshot())

    def body(self, plan: RequestPlan) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": plan.max_tokens}
        if self.spec.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": plan.prompt}]
        else:
            body["prompt"] = plan.prompt
        body["stream"] = self.spec.stream
        if self.spec.stream:
            body["stream_options"] = {"include_usage": True}
        if self.spec.ignore_eos:
            body["ignore_eos"] = True
        return body

    async def send(self, plan: RequestPlan) -> RequestRecord:
        attempt = _Attempt(backend=self.default_backend)
        start = self.loop.time()
        request_deadline = start + self.spec.timeout_s
        try:
            async with asyncio.timeout_at(min(request_deadline, self.deadline)):
                await self.exchange(self.body(plan), attempt)
        except TimeoutError:
            if attempt.done_at is not None:
                # Complete at [DONE]; only the trailing end of the body never came.
                attempt.status = attempt.http_status
            else:
                attempt.status = "timeout" if request_deadline <= self.deadline else "deadline"
        except aiohttp.ClientConnectorError as exc:
            attempt.status, attempt.error = "connect_error", _reason(exc)
        except aiohttp.ClientError as exc:
            if attempt.done_at is not None:
                # As above: the response was complete, only its trailing bytes were lost.
                attempt.status = attempt.http_status
            else:
                attempt.status = "stream_broken" if attempt.streaming else "disconnected"
                attempt.error = str(exc) or type(exc).__name__
        end = attempt.done_at if attempt.done_at is not None else self.loop.time()
        assert attempt.status is not None
        tokens = attempt.usage_tokens if attempt.usage_tokens is not None else attempt.chunks
        ttft = None
        if attempt.ttft_at is not None:
            ttft = attempt.ttft_at - start
        elif not self.spec.stream and attempt.done_at is not None:
            ttft = attempt.done_at - start
        return RequestRecord(
            index=plan.index,
            start_s=start - self.started,
            status=attempt.status,
            latency_s=end - start,
            ttft_s=ttft,
            output_tokens=tokens,
            prompt_tokens=plan.prompt_tokens,
            max_tokens=plan.max_tokens,
            backend=attempt.backend,
            error=attempt.error,
            retries=attempt.retries,
        )

    async def exchange(self, body: dict[str, Any], attempt: _Attempt) -> None:
        while True:
            try:
                await self.exchange_once(body, attempt)
                return
            except aiohttp.ClientConnectorError:
                raise  # no connection at all: nothing was reused, so nothing to retry
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt.http_status is not None or attempt.retries >= self.spec.max_retries:
                    raise
                attempt.retries += 1

    async def exchange_once(self, body: dict[str, Any], attempt: _Attempt) -> None:
        async with self.session.post(self.url, json=body) as resp:
            attempt.http_status = resp.status
            upstream = resp.headers.get(UPSTREAM_HEADER)
            if upstream:
                attempt.backend = _served_by(upstream)
            if not 200 <= resp.status < 300:
                attempt.status = resp.status
                attempt.error = _error_message(await resp.text(errors="replace"))
            elif self.spec.stream:
                await self.read_stream(resp, attempt)
            else:
                await self.read_json(resp, attempt)

    async def read_json(self, resp: aiohttp.ClientResponse, attempt: _Attempt) -> None:
        raw = await resp.read()
        attempt.done_at = self.loop.time()
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = (
                (choice.get("message") or {}).get("content")
                if self.spec.endpoint == "chat"
                else choice.get("text")
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            attempt.status, attempt.error = "protocol_error", raw[:300].decode(errors="replace")
            return
        attempt.status = resp.status
        attempt.usage_tokens = _usage_tokens(data)
        if attempt.usage_tokens is None:
            # No usage block: whitespace words are the best count available without a tokenizer.
            attempt.usage_tokens = len(str(text or "").split())

    async def read_stream(self, resp: aiohttp.ClientResponse, attempt: _Attempt) -> None:
        attempt.streaming = True
        chat = self.spec.endpoint == "chat"
        async for raw in resp.content:
            if attempt.done_at is not None:
                # Drain the end of the body so the connection can be reused.
                continue
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, ": keep-alive" comments, "event:" lines
            payload = line[5:].strip()
            if payload == b"[DONE]":
                attempt.done_at = self.loop.time()
                attempt.status = resp.status
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                attempt.status = "protocol_error"
                attempt.error = payload[:300].decode(errors="replace")
                return
            if not isinstance(chunk, dict):
                attempt.status, attempt.error = "protocol_error", "stream chunk is not an object"
                return
            if "error" in chunk or chunk.get("object") == "error":
                attempt.status = "stream_error"
                attempt.error = _error_message(payload.decode(errors="replace"))
                return
            tokens = _usage_tokens(chunk)
            if tokens is not None:
                attempt.usage_tokens = tokens
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if text:
                    attempt.chunks += 1
                    if attempt.ttft_at is None:
                        attempt.ttft_at = self.loop.time()
        if attempt.done_at is None:
            attempt.status, attempt.error = "stream_broken", "stream ended without data: [DONE]"


def _usage_tokens(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return usage["completion_tokens"]
    return None


async def run_load(spec: LoadSpec, progress: ProgressCallback | None = None) -> LoadReport:
    """Send the load described by ``spec`` and return the report.

    Stops by itself after ``spec.requests`` requests or ``spec.max_duration_s`` seconds,
    whichever comes first; requests still running at the deadline are recorded with status
    ``"deadline"``. Raises :class:`LoadTargetError` if the target cannot be reached at the
    start (or its model cannot be discovered), rather than recording every request as failed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.max_duration_s
    base = spec.base_url
    headers = {"User-Agent": "llmfleet-load", **spec.headers}
    if spec.api_key and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = f"Bearer {spec.api_key}"
    # Timeouts are enforced per request with asyncio (see _Run.send), so none here.
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        probe_deadline = min(deadline, loop.time() + spec.timeout_s)
        if spec.model is None:
            model = await _discover_model(session, base, probe_deadline)
        else:
            model = spec.model
            await _check_reachable(base, probe_deadline)
        run = _Run(spec, session, model, deadline, progress)
        wall = await run.run()
    records = run.records
    stopped = len(records) < spec.requests or any(r.status == "deadline" for r in records)
    return build_report(
        records,
        wall_time_s=wall,
        planned_requests=spec.requests,
        url=str(base),
        model=model,
        endpoint=spec.endpoint,
        stream=spec.stream,
        concurrency=spec.concurrency,
        seed=spec.seed,
        output_tokens_dist=str(spec.output_tokens),
        prompt_tokens_dist=str(spec.prompt_tokens),
        stopped_by_deadline=stopped,
    )


def run_load_sync(spec: LoadSpec, progress: ProgressCallback | None = None) -> LoadReport:
    """Blocking wrapper around :func:`run_load` (runs its own event loop)."""
    return asyncio.run(run_load(spec, progress))
