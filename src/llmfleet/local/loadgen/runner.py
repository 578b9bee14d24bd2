"""Asyncio clients that send the planned requests and record what happened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from yarl import URL

from llmfleet.local.traces import Trace, load_trace

from .arrivals import ARRIVALS, Arrival, RateSegment, arrival_times, constant_rate
from .benchmark import Slo, parse_slo
from .progress import ProgressCallback, ProgressSnapshot
from .records import RequestRecord
from .report import LoadReport, OpenLoop, build_report
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
MAX_REQUEST_RATE = 10_000.0
DEFAULT_MAX_DURATION_S = 120.0
# After Ctrl-C, requests in flight get this long to finish before they are cut.
INTERRUPT_GRACE_S = 2.0

Endpoint = Literal["chat", "completions"]
_PATHS: dict[str, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


class LoadTargetError(RuntimeError):
    """The target could not be used at all (unreachable, or its model list unusable)."""


@dataclass
class LoadSpec:
    """What load to send, and where. Every run is bounded in count and in time.

    Closed loop (the default): ``concurrency`` clients each send a request, wait for its
    answer, and send the next. Open loop: with ``request_rate``, or with a ``profile`` whose
    rate changes over time, requests start at that rate (``arrival`` ``"poisson"`` or
    ``"constant"``) whatever the answers do, as real users arrive; at most ``max_in_flight``
    are in flight and an arrival beyond that is dropped by the client and counted in the
    report. ``profile`` takes a :class:`~llmfleet.local.traces.Trace`, or a built-in trace's
    name or a CSV file's path, loaded on construction (a bad one raises TraceError, a
    ValueError). ``time_scale`` compresses a profile's time axis (0.1 plays a 30-minute
    trace in 3 minutes); its rates stay as they are.

    Bounds: at most ``requests`` requests (None: no count bound, which needs ``duration_s``
    or a profile); no request starts after ``duration_s`` seconds or the end of the
    profile; and ``max_duration_s`` is the hard stop that cuts requests still in flight (see
    :meth:`stop_after_s` for its default).

    ``output_tokens`` and ``prompt_tokens`` take a :class:`Distribution` or its string form
    (see :func:`parse_distribution`); strings are parsed on construction, so a bad value
    fails here with a ValueError. ``model=None`` asks ``GET /v1/models`` once and uses the
    first id. ``api_key`` becomes ``Authorization: Bearer ...`` unless ``headers`` already
    has an Authorization header. ``ignore_eos`` adds vLLM's ``ignore_eos`` so a real vLLM
    generates exactly ``max_tokens`` like the simulated backend does. ``slo`` (a
    :class:`~.benchmark.Slo` or its string form, ``ttft=500ms,tpot=50ms,e2e=10s``) makes the
    report count goodput. ``ca_file`` verifies an HTTPS server against that CA (the sandbox's
    own with ``up --tls``) instead of the system's.
    """

    url: str = "http://127.0.0.1:8080"
    model: str | None = None
    requests: int | None = 100
    concurrency: int = 10
    ramp_s: float = 0.0
    request_rate: float | None = None
    profile: Trace | str | None = None
    time_scale: float = 1.0
    arrival: Arrival = "poisson"
    max_in_flight: int = 500
    duration_s: float | None = None
    stream: bool = True
    endpoint: Endpoint = "chat"
    seed: int = 0
    output_tokens: Distribution | str = DEFAULT_OUTPUT_TOKENS
    prompt_tokens: Distribution | str = DEFAULT_PROMPT_TOKENS
    max_duration_s: float | None = None
    timeout_s: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    ignore_eos: bool = False
    # Like the official OpenAI clients (two retries by default, after their backoff): a
    # request whose connection closed before any answer is sent again. It happens on a
    # keep-alive connection that an nginx worker closes after a reload; the report counts the
    # retries.
    max_retries: int = 2
    slo: Slo | str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.slo, str):
            self.slo = parse_slo(self.slo)
        if isinstance(self.profile, str):
            self.profile = load_trace(self.profile)
        self.output_tokens = parse_distribution(self.output_tokens)
        self.prompt_tokens = parse_distribution(self.prompt_tokens)
        url = URL(self.url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"url must be an http(s) URL such as http://127.0.0.1:8080, got {self.url!r}"
            )
        if self.requests is not None:
            _check_int("requests", self.requests, 1, MAX_REQUESTS)
        _check_int("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        _check_int("max_in_flight", self.max_in_flight, 1, MAX_CONCURRENCY)
        _check_int("max_retries", self.max_retries, 0, 10)
        _check_float("ramp_s", self.ramp_s, allow_zero=True)
        _check_float("timeout_s", self.timeout_s, allow_zero=False)
        if self.max_duration_s is not None:
            _check_float("max_duration_s", self.max_duration_s, allow_zero=False)
        if self.duration_s is not None:
            _check_float("duration_s", self.duration_s, allow_zero=False)
        if self.request_rate is not None:
            rate = self.request_rate
            finite = isinstance(rate, int | float) and not isinstance(rate, bool)
            if not (finite and math.isfinite(rate) and 0 < rate <= MAX_REQUEST_RATE):
                raise ValueError(
                    f"request_rate must be a number of requests per second > 0 and <= "
                    f"{MAX_REQUEST_RATE:g}, got {rate!r}"
                )
        if self.request_rate is not None and self.profile is not None:
            raise ValueError("give request_rate or profile, not both: each sets the rate")
        ok_scale = isinstance(self.time_scale, int | float) and not isinstance(
            self.time_scale, bool
        )
        if not (ok_scale and math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a finite number > 0, got {self.time_scale!r}")
        if self.time_scale != 1.0 and self.profile is None:
            raise ValueError(
                f"time_scale {self.time_scale:g} compresses a profile; there is none"
            )
        if self.arrival not in ARRIVALS:
            raise ValueError(f"arrival must be 'poisson' or 'constant', got {self.arrival!r}")
        if self.endpoint not in _PATHS:
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {self.endpoint!r}")
        if self.open_loop and self.ramp_s:
            raise ValueError("ramp_s spreads closed-loop clients; an open-loop run has none")
        if self.requests is None and self.window_s is None:
            raise ValueError("requests=None needs duration_s or a profile: every run is bounded")
        window = self.window_s
        if window is not None and self.max_duration_s is not None and (
            window >= self.max_duration_s
        ):
            raise ValueError(
                f"max_duration_s ({self.max_duration_s:g}) must be above the {window:g} s "
                "during which requests start, or it would cut the run short"
            )

    @property
    def open_loop(self) -> bool:
        """Whether requests start on a schedule rather than when earlier ones are answered."""
        return self.request_rate is not None or self.profile is not None

    @property
    def trace(self) -> Trace | None:
        """The profile, loaded (None without one)."""
        assert not isinstance(self.profile, str)  # __post_init__ loads a name or a path
        return self.profile

    @property
    def window_s(self) -> float | None:
        """Seconds after the start during which requests may start (None: no such limit)."""
        if self.trace is None:
            return self.duration_s
        played = self.trace.duration_s * self.time_scale
        return played if self.duration_s is None else min(played, self.duration_s)

    def stop_after_s(self, last_start_s: float | None = None) -> float:
        """The hard stop in seconds: requests still in flight then are cut (``deadline``).

        ``max_duration_s`` if given; else ``timeout_s`` after the last request may start (the
        end of ``duration_s`` or of the profile, else ``last_start_s``: the last arrival of
        an open-loop schedule); else 120 s.
        """
        if self.max_duration_s is not None:
            return self.max_duration_s
        last = self.window_s if self.window_s is not None else last_start_s
        return DEFAULT_MAX_DURATION_S if last is None else last + self.timeout_s

    def schedule(self) -> list[float] | None:
        """An open-loop run's arrival times in seconds from its start (None: closed loop)."""
        if not self.open_loop:
            return None
        bound = MAX_REQUESTS if self.requests is None else self.requests
        return arrival_times(self.rate(), self.arrival, self.seed, bound)

    def rate(self) -> list[RateSegment]:
        """The planned open-loop arrival rate (empty for a closed-loop run)."""
        if self.request_rate is not None:
            return constant_rate(self.request_rate, self.window_s)
        if self.trace is None:
            return []
        window = self.window_s
        assert window is not None
        scale = self.time_scale
        return [
            RateSegment(start * scale, min(end * scale, window), rps)
            for start, end, rps in self.trace.segments()
            if start * scale < window
        ]

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
    chunk_at: list[float] = field(default_factory=list)  # loop time of each content chunk
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
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # Its os_error's errno is not the reason: the certificate is (see --ca-file).
        return f"TLS certificate not trusted: {exc.certificate_error.reason or exc}"
    return _os_reason(exc.os_error)


def _os_reason(exc: OSError) -> str:
    # asyncio puts "Connect call failed (...)" in strerror; the errno text is the useful part.
    return os.strerror(exc.errno) if exc.errno else str(exc)


def retry_delay_s(retries: int, draw: float) -> float:
    """The official OpenAI Python client's wait before retry number `retries` + 1: 0.5 s
    doubling to at most 8 s, less up to a quarter at random (`draw` in [0, 1))."""
    return min(0.5 * 2**retries, 8.0) * (1 - 0.25 * draw)


class _Run:
    def __init__(
        self,
        spec: LoadSpec,
        session: aiohttp.ClientSession,
        model: str,
        schedule: list[float] | None,
        deadline: float,
        progress: ProgressCallback | None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.model = model
        self.deadline = deadline
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self.jitter = random.Random(spec.seed)
        self.url = spec.base_url.with_path(spec.base_url.path.rstrip("/") + _PATHS[spec.endpoint])
        self.default_backend = _authority(spec.base_url)
        assert isinstance(spec.output_tokens, Distribution)
        assert isinstance(spec.prompt_tokens, Distribution)
        self.schedule = schedule
        if schedule is not None:
            bound = len(schedule)
        else:
            bound = MAX_REQUESTS if spec.requests is None else spec.requests
        self.bound = bound
        self.plans = generate_plans(bound, spec.seed, spec.output_tokens, spec.prompt_tokens)
        self.records: list[RequestRecord] = []
        self.dropped_s: list[float] = []
        self.errors = 0
        self.in_flight = 0
        self.sent = 0
        self.started = 0.0
        self.started_at = 0.0
        self.window_end: float | None = None
        self.window_closed = False
        self.start_lag_max = 0.0
        self.interrupted = False
        self.wake = asyncio.Event()
        self.scopes: set[asyncio.Timeout] = set()

    @property
    def planned(self) -> int:
        """What the bounds allowed: -n, or what started before the window closed."""
        if self.schedule is None and (self.window_closed or self.spec.requests is None):
            return self.sent
        return self.bound

    def snapshot(self, finished: bool = False) -> ProgressSnapshot:
        done = len(self.records)
        known = self.schedule is not None or self.spec.requests is not None
        return ProgressSnapshot(
            done=done,
            total=self.bound if known else None,
            ok=done - self.errors,
            errors=self.errors,
            in_flight=self.in_flight,
            elapsed_s=self.loop.time() - self.started,
            finished=finished,
            dropped=len(self.dropped_s),
        )

    def interrupt(self) -> None:
        """Start nothing more; requests in flight have ``INTERRUPT_GRACE_S`` to finish, then
        are cut (status ``interrupted``)."""
        if self.interrupted:
            return
        self.interrupted = True
        self.deadline = min(self.deadline, self.loop.time() + INTERRUPT_GRACE_S)
        self.wake.set()
        for scope in self.scopes:
            scope.reschedule(self.deadline)

    async def run(self) -> float:
        """Send everything; return the wall time in seconds."""
        self.started = self.loop.time()
        self.started_at = time.time()
        if self.spec.window_s is not None:
            self.window_end = self.started + self.spec.window_s
        if self.schedule is not None:
            senders = [asyncio.create_task(self.dispatch(self.schedule))]
        else:
            clients = min(self.spec.concurrency, self.bound)
            senders = [asyncio.create_task(self.worker(i)) for i in range(clients)]
        tasks = [*senders, *([asyncio.create_task(self.tick())] if self.progress else [])]
        try:
            await asyncio.gather(*senders)
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

    async def pause_until(self, when: float) -> None:
        """Wait until loop time ``when``, or less if the run is interrupted."""
        if when <= self.loop.time():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(when):
                await self.wake.wait()

    def may_start(self) -> bool:
        now = self.loop.time()
        if now >= self.deadline or self.interrupted:
            return False
        if self.window_end is not None and now >= self.window_end:
            self.window_closed = True
            return False
        return True

    async def worker(self, number: int) -> None:
        delay = number * self.spec.ramp_s / self.spec.concurrency
        await self.pause_until(min(self.started + delay, self.deadline))
        while self.may_start():
            plan = next(self.plans, None)
            if plan is None:
                return
            self.in_flight += 1
            self.sent += 1
            await self.complete(plan)

    async def dispatch(self, schedule: list[float]) -> None:
        # A task group: if the dispatcher fails or is cancelled, so are its requests.
        async with asyncio.TaskGroup() as requests:
            for at, plan in zip(schedule, self.plans, strict=True):
                planned_at = self.started + at
                await self.pause_until(planned_at)
                # Not may_start(): the schedule ends before the window does, and an arrival
                # the loop wakes for a little late still belongs to the run.
                if self.loop.time() >= self.deadline or self.interrupted:
                    return
                self.start_lag_max = max(self.start_lag_max, self.loop.time() - planned_at)
                if self.in_flight >= self.spec.max_in_flight:
                    self.dropped_s.append(at)
                    if self.progress:
                        self.progress(self.snapshot())
                    continue
                # Counted before the task runs, so arrivals in the same tick see the cap.
                self.in_flight += 1
                self.sent += 1
                requests.create_task(self.complete(plan))

    async def complete(self, plan: RequestPlan) -> None:
        """Send one request already counted in flight, and record it."""
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
        scope: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout_at(min(request_deadline, self.deadline)) as scope:
                # Registered so that an interruption can cut this request short.
                self.scopes.add(scope)
                await self.exchange(self.body(plan), attempt)
        except TimeoutError:
            if attempt.done_at is not None:
                # Complete at [DONE]; only the trailing end of the body never came.
                attempt.status = attempt.http_status
            elif request_deadline <= self.deadline:
                attempt.status = "timeout"
            else:
                attempt.status = "interrupted" if self.interrupted else "deadline"
        except aiohttp.ClientConnectorError as exc:
            attempt.status, attempt.error = "connect_error", _reason(exc)
        except aiohttp.ClientError as exc:
            if attempt.done_at is not None:
                # As above: the response was complete, only its trailing bytes were lost.
                attempt.status = attempt.http_status
            else:
                attempt.status = "stream_broken" if attempt.streaming else "disconnected"
                attempt.error = str(exc) or type(exc).__name__
        finally:
            if scope is not None:
                self.scopes.discard(scope)
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
            itl_s=[b - a for a, b in zip(attempt.chunk_at, attempt.chunk_at[1:], strict=False)],
        )

    async def exchange(self, body: dict[str, Any], attempt: _Attempt) -> None:
        while True:
            try:
                await self.exchange_once(body, attempt)
                return
            except aiohttp.ClientConnectorError:
                raise  # no connection at all: nothing was reused, so nothing to retry
            except aiohttp.ClientConnectionError:
                # Closed, reset or unwritable ("Can not write request body"), but only before
                # any answer: a stream cut halfway is not sent again.
                if attempt.http_status is not None or attempt.retries >= self.spec.max_retries:
                    raise
                # Straight away, a retry takes the next pooled connection, which the same
                # reload may have closed too: three such in a row failed 3 of 1,500 requests
                # under 60 reloads. The OpenAI clients wait first, and by then the pool has
                # seen those connections close.
                await asyncio.sleep(retry_delay_s(attempt.retries, self.jitter.random()))
                attempt.retries += 1

    async def exchange_once(self, body: dict[str, Any], attempt: _Attempt) -> None:
        # One pass of the event loop before a pooled connection is taken: a close that came
        # right behind the last answer on it (an nginx worker leaving after a reload) is then
        # read, and the pool drops that connection instead of sending on it, as httpx (the
        # OpenAI clients') checks a pooled socket first. Under 60 reloads, 600 requests were
        # sent again 31-43 times instead of 309-312.
        await asyncio.sleep(0)
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
                    now = self.loop.time()
                    attempt.chunks += 1
                    attempt.chunk_at.append(now)
                    if attempt.ttft_at is None:
                        attempt.ttft_at = now
        if attempt.done_at is None:
            attempt.status, attempt.error = "stream_broken", "stream ended without data: [DONE]"


def _usage_tokens(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return usage["completion_tokens"]
    return None


async def run_load(
    spec: LoadSpec,
    progress: ProgressCallback | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> LoadReport:
    """Send the load described by ``spec`` and return the report.

    Stops by itself at the first of its bounds (see :class:`LoadSpec`); requests still
    running at the hard stop are recorded with status ``"deadline"``. Setting ``stop`` ends
    the run early: nothing more starts, requests in flight get ``INTERRUPT_GRACE_S`` to
    finish and are then cut and recorded as ``"interrupted"``, and the partial report has
    ``interrupted=True``. Raises
    :class:`LoadTargetError` if the target cannot be reached at the start (or its model
    cannot be discovered), rather than recording every request as failed.
    """
    loop = asyncio.get_running_loop()
    schedule = spec.schedule()
    deadline = loop.time() + spec.stop_after_s(schedule[-1] if schedule else None)
    base = spec.base_url
    headers = {"User-Agent": "llmfleet-load", **spec.headers}
    if spec.api_key and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = f"Bearer {spec.api_key}"
    # Timeouts are enforced per request with asyncio (see _Run.send), so none here.
    timeout = aiohttp.ClientTimeout(total=None)
    limit = spec.max_in_flight if spec.open_loop else spec.concurrency
    connector = aiohttp.TCPConnector(
        limit=limit, ssl=ssl.create_default_context(cafile=spec.ca_file) if spec.ca_file else True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        probe_deadline = min(deadline, loop.time() + spec.timeout_s)
        if spec.model is None:
            model = await _discover_model(session, base, probe_deadline)
        else:
            model = spec.model
            await _check_reachable(base, probe_deadline)
        run = _Run(spec, session, model, schedule, deadline, progress)
        watcher = asyncio.create_task(_interrupt_on(stop, run)) if stop else None
        try:
            wall = await run.run()
        finally:
            if watcher:
                watcher.cancel()
    records = run.records
    unsent = run.sent + len(run.dropped_s) < run.planned
    cut = any(r.status == "deadline" for r in records)
    return build_report(
        records,
        wall_time_s=wall,
        planned_requests=run.planned,
        url=str(base),
        model=model,
        endpoint=spec.endpoint,
        stream=spec.stream,
        concurrency=None if spec.open_loop else spec.concurrency,
        seed=spec.seed,
        output_tokens_dist=str(spec.output_tokens),
        prompt_tokens_dist=str(spec.prompt_tokens),
        stopped_by_deadline=cut or (unsent and not run.interrupted),
        open_loop=_open_loop(spec, run, wall),
        duration_s=spec.window_s,
        dropped_s=run.dropped_s,
        interrupted=run.interrupted,
        started_at=run.started_at,
        slo=spec.slo if isinstance(spec.slo, Slo) else None,
    )


async def _interrupt_on(stop: asyncio.Event, run: _Run) -> None:
    await stop.wait()
    run.interrupt()


def _open_loop(spec: LoadSpec, run: _Run, wall: float) -> OpenLoop | None:
    if not spec.open_loop:
        return None
    # Cut at the end of the run: a rate without --duration has no end of its own.
    rate = [
        RateSegment(s.start_s, min(s.end_s, wall), s.rps) for s in spec.rate() if s.start_s < wall
    ]
    return OpenLoop(
        arrival=spec.arrival,
        request_rate=spec.request_rate,
        profile=spec.trace.name if spec.trace else None,
        time_scale=spec.time_scale,
        max_in_flight=spec.max_in_flight,
        rate=rate,
        start_lag_max_s=run.start_lag_max,
    )


def run_load_sync(
    spec: LoadSpec, progress: ProgressCallback | None = None, *, stop_on_sigint: bool = False
) -> LoadReport:
    """Blocking wrapper around :func:`run_load` (runs its own event loop).

    With ``stop_on_sigint`` (main thread only), the first SIGINT (Ctrl-C) ends the run early
    with a partial report, as ``stop`` does for :func:`run_load`; a second one raises
    KeyboardInterrupt as usual.
    """

    async def main() -> LoadReport:
        if not stop_on_sigint:
            return await run_load(spec, progress)
        loop, stop = asyncio.get_running_loop(), asyncio.Event()

        def first_interrupt() -> None:
            loop.remove_signal_handler(signal.SIGINT)  # the default handler takes the next one
            stop.set()

        loop.add_signal_handler(signal.SIGINT, first_interrupt)
        return await run_load(spec, progress, stop=stop)

    return asyncio.run(main())
