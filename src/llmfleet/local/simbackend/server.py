"""The aiohttp application: vLLM's HTTP surface on top of the simulated engine.

`build_app(settings)` gives an Application for in-process use; `serve(settings)` is what
`python -m llmfleet.local.simbackend` runs; `ServerThread` runs one on a background thread
for tests.
Runners must be created with `make_runner`, which turns on handler cancellation: a client that
disconnects cancels its handler at once, which aborts its sequence and frees its slot even while
it is still waiting in the queue (vLLM does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from llmfleet.local.simbackend.accesslog import format_access_log_line, utc_timestamp
from llmfleet.local.simbackend.driver import EngineLoop
from llmfleet.local.simbackend.engine import EngineConfig, Sequence, SimEngine
from llmfleet.local.simbackend.faults import FaultState, parse_fault
from llmfleet.local.simbackend.metrics import CONTENT_TYPE, engine_registry
from llmfleet.local.simbackend.openai_api import (
    JSON_SEPARATORS,
    SSE_DONE,
    VLLM_VERSION,
    VOCAB,
    APIError,
    GenerationRequest,
    Kind,
    completion_body,
    dumps,
    error_body,
    models_body,
    output_text,
    parse_generation_request,
    parse_json_body,
    random_id,
    response_id,
    stream_chunk,
    token_text,
    usage,
    usage_chunk,
)
from llmfleet.local.simbackend.presets import get_preset

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# Connections the kernel queues until the server accepts them. Thousands of clients (or nginx on
# their behalf) connect at once in a burst; a full queue drops their SYNs, each costing a 1 s, 3 s,
# 7 s ... retransmission. Linux caps it at net.core.somaxconn. (vLLM's uvicorn uses 2048.)
LISTEN_BACKLOG = 8192
KEEPALIVE_TIMEOUT_S = 5.0  # uvicorn's (and so vLLM's) default keep-alive
# After the graceful drain (SimSettings.shutdown_timeout), how long aiohttp may wait for the
# handlers it then cancels. aiohttp waits up to twice this.
CANCEL_GRACE_S = 0.25
# Paths left out of the access log: scraped/probed every few seconds, they would drown it.
QUIET_PATHS = frozenset({"/health", "/metrics"})
# How many of the latest requests `GET /_sim/requests` shows, headers included.
RECENT_REQUESTS = 1000

LogSink = Callable[[str], None]


def print_line(line: str) -> None:
    """Write one log line to stdout and flush, so log files are current while we run."""
    print(line, flush=True)


@dataclass(frozen=True)
class SimSettings:
    """Everything that configures one simulated backend (the CLI flags, as a dataclass).

    Timing and capacity fields left at None come from the preset.
    """

    model: str = DEFAULT_MODEL
    served_model_name: tuple[str, ...] = ()  # empty: serve under `model`
    host: str = "127.0.0.1"
    port: int = 8001  # 0 picks a free port (see the startup line or ServerThread.port)
    max_model_len: int = 4096
    preset: str = "l4"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_tokens: int | None = None
    prefill_ms_per_token: float | None = None
    itl_ms: float | None = None
    itl_ms_per_running_seq: float | None = None
    time_scale: float = 1.0  # multiplies every simulated duration; 0.01 runs 100x faster
    output_len_median: int = 200  # median drawn length when a request sets no max_tokens
    name: str = "simbackend"
    seed: int = 0
    shutdown_timeout: float = 5.0  # seconds in-flight requests get to finish on SIGTERM
    backlog: int = LISTEN_BACKLOG  # listen queue; the kernel caps it at net.core.somaxconn
    # Seconds before it listens at all, as vLLM loading a model: a GPU node's cold start.
    startup_delay_s: float = 0.0
    max_body_bytes: int = 64 * 1024 * 1024

    @property
    def served_names(self) -> tuple[str, ...]:
        """The names the API accepts; the first one labels the metrics."""
        names = self.served_model_name
        if isinstance(names, str):
            return (names,)
        return tuple(names) or (self.model,)

    def engine_config(self) -> EngineConfig:
        """The preset with this settings' overrides applied; ValueError if inconsistent."""
        if self.time_scale < 0 or not math.isfinite(self.time_scale):
            raise ValueError("time_scale must be a finite number >= 0")
        if self.output_len_median < 1:
            raise ValueError("output_len_median must be at least 1")
        if self.startup_delay_s < 0 or not math.isfinite(self.startup_delay_s):
            raise ValueError("startup_delay_s must be a finite number of seconds >= 0")
        preset = get_preset(self.preset)

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return EngineConfig(
            max_model_len=self.max_model_len,
            max_num_seqs=pick(self.max_num_seqs, preset.max_num_seqs),
            max_num_batched_tokens=pick(self.max_num_batched_tokens, preset.max_num_batched_tokens),
            kv_cache_tokens=pick(self.kv_cache_tokens, preset.kv_cache_tokens),
            prefill_ms_per_token=pick(self.prefill_ms_per_token, preset.prefill_ms_per_token),
            itl_ms=pick(self.itl_ms, preset.itl_ms),
            itl_ms_per_running_seq=pick(self.itl_ms_per_running_seq, preset.itl_ms_per_running_seq),
        )


@dataclass
class SimBackend:
    """The state behind one app: engine, its driver, faults and request counters."""

    settings: SimSettings
    config: EngineConfig
    engine: SimEngine
    loop: EngineLoop
    faults: FaultState
    log: LogSink
    exit_process: Callable[[int], None]
    rng: random.Random
    registry: CollectorRegistry  # what /metrics exposes: this engine's families only
    by_status: Counter[int] = field(default_factory=Counter)
    open_streams: int = 0
    in_flight: int = 0  # generation requests between submit and their last byte
    hung_requests: int = 0  # requests held by the hang fault right now
    # The latest requests as they arrived, headers and all (`GET /_sim/requests`): what a
    # proxy in front forwarded, e.g. that no client's API key reached the model server.
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))

    def choose_output(self, req: GenerationRequest) -> tuple[int, str]:
        """How many tokens to generate and the finish reason once they are out.

        An explicit max_tokens is honoured exactly ("length"), as load tests rely on; without
        one the length is drawn from a seeded log-normal and finishes with "stop", unless it
        runs into the context limit ("length"), like vLLM's default max_tokens.
        """
        cap = self.config.max_model_len - req.prompt_tokens
        if req.max_tokens is not None:
            return req.max_tokens, "length"
        if req.ignore_eos:
            return cap, "length"
        median = self.settings.output_len_median
        drawn = max(1, req.min_tokens, round(self.rng.lognormvariate(math.log(median), 0.8)))
        return (cap, "length") if drawn >= cap else (drawn, "stop")

    def stats(self) -> dict[str, Any]:
        """Counters for tests and humans (`GET /_sim/stats`)."""
        gauges = self.engine.gauges()
        return {
            "name": self.settings.name,
            "fault": self.faults.current.to_json(),
            "running": gauges.running,
            # Every request in the queue now, not vLLM's gauge (what the last step left).
            "waiting": len(self.engine.waiting),
            "kv_cache_usage": gauges.kv_cache_usage,
            "open_streams": self.open_streams,
            "in_flight": self.in_flight,
            "hung_requests": self.hung_requests,
            "requests_total": sum(self.by_status.values()),
            "requests_by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "finished": dict(self.engine.metrics.request_success),
            "preemptions": self.engine.num_preemptions,
            "engine_steps": self.loop.steps,
        }


def _request_key(name: str, kind: type) -> Any:
    # web.RequestKey only exists in newer aiohttp; older ones take plain string keys.
    key_class = getattr(web, "RequestKey", None)
    return name if key_class is None else key_class(name, kind)


BACKEND = web.AppKey("simbackend", SimBackend)
LOG_FIELDS = _request_key("simbackend.log_fields", dict)  # what the access-log line says
REQUEST_ID = _request_key("simbackend.request_id", str)  # the x-request-id to echo


def _json(payload: Any, status: int = 200) -> web.Response:
    # Exactly Starlette's JSONResponse header: no charset parameter.
    text = dumps(payload)
    try:
        body = text.encode()
    except UnicodeEncodeError:  # text that is not Unicode (a lone surrogate): escaped instead
        body = json.dumps(payload, separators=JSON_SEPARATORS).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return _json(error_body(status, message, param), status)


# -- middlewares -----------------------------------------------------------------------------


@web.middleware
async def _frontend(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request ids, error shapes, the access log; never lets a traceback reach the client."""
    backend = request.app[BACKEND]
    started = time.perf_counter()
    request[REQUEST_ID] = request.headers.get("X-Request-Id") or random_id()
    fields: dict[str, Any] = {
        "request_id": request[REQUEST_ID],
        "method": request.method,
        "path": request.path,
    }
    request[LOG_FIELDS] = fields
    if not _is_quiet(request):
        backend.recent.append({
            "request_id": request[REQUEST_ID],
            "method": request.method,
            "path": request.path,
            # Pairs, not a mapping: a header sent twice shows twice.
            "headers": [[name, value] for name, value in request.headers.items()],
        })
    try:
        response = await handler(request)
    except APIError as exc:
        response = _json(exc.body(), exc.status)
    except web.HTTPException as exc:
        response = _http_exception(exc)
    except asyncio.CancelledError:
        # The client went away (or shutdown timed out); streams already sent their 200.
        fields.setdefault("finish_reason", "abort")
        _log_request(backend, request, fields, 200 if fields.get("prepared") else 499, started)
        raise
    except Exception as exc:  # a bug must still answer in vLLM's shape, not a traceback
        print(f"simbackend: internal error on {request.path}: {exc!r}", file=sys.stderr)
        if fields.get("prepared"):
            raise  # a stream already sent its headers; all aiohttp can do is drop it
        response = _error(500, "Internal server error")
    _log_request(backend, request, fields, response.status, started)
    return response


def _http_exception(exc: web.HTTPException) -> web.Response:
    # Unknown paths and methods answer like FastAPI (what vLLM runs on); others in vLLM's shape.
    if exc.status in (404, 405):
        response = _json({"detail": exc.reason}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    return _error(exc.status, exc.reason)


def _is_quiet(request: web.Request) -> bool:
    # Probes, scrapes and reading the simulator's own state are neither logged nor recorded.
    path = request.path
    return path in QUIET_PATHS or (path.startswith("/_sim/") and request.method == "GET")


def _log_request(
    backend: SimBackend, request: web.Request, fields: dict[str, Any], status: int, started: float
) -> None:
    if _is_quiet(request):
        return
    backend.by_status[status] += 1
    fields["status"] = status
    fields["duration_ms"] = (time.perf_counter() - started) * 1000.0
    backend.log(format_access_log_line(backend.settings.name, fields))


@web.middleware
async def _fault_gate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Apply the hang / unavailable / unhealthy faults before a request reaches its handler."""
    path = request.path
    if path == "/metrics" or path.startswith("/_sim/"):
        return await handler(request)  # observability and control always answer
    backend = request.app[BACKEND]
    faults = backend.faults
    while True:
        if faults.mode == "unavailable" or (faults.mode == "unhealthy" and path == "/health"):
            return _error(503, "The server is unavailable (simulated fault).")
        if faults.mode != "hang" or path == "/health":
            return await handler(request)
        backend.hung_requests += 1
        try:
            await faults.wait_while_hung()
        finally:
            backend.hung_requests -= 1


async def _stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Look like uvicorn, and echo the request id as vLLM's --enable-request-id-headers does.
    response.headers["server"] = "uvicorn"
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["x-request-id"] = request_id


# -- OpenAI API ------------------------------------------------------------------------------


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def _generate(request: web.Request, kind: Kind) -> web.StreamResponse:
    backend = request.app[BACKEND]
    fields = request[LOG_FIELDS]
    payload = parse_json_body(await request.read())
    req = parse_generation_request(
        kind, payload, backend.settings.served_names, backend.config.max_model_len
    )
    # vLLM names the completion after the X-Request-Id header, else the body's request_id, else
    # a random id; the x-request-id response header never comes from the body.
    base_id = request[REQUEST_ID]
    if "X-Request-Id" not in request.headers and req.body_request_id:
        base_id = req.body_request_id
    resp_id = response_id(kind, base_id)
    fields["request_id"] = resp_id
    target, reason = backend.choose_output(req)
    seq = Sequence(
        prompt_tokens=req.prompt_tokens, target_tokens=target, target_reason=reason, arrival=0.0
    )
    word_seed = backend.rng.randrange(len(VOCAB))
    created = int(time.time())
    fields.update(stream=req.stream, prompt_tokens=req.prompt_tokens, completion_tokens=0)
    backend.loop.submit(seq)
    backend.in_flight += 1
    try:
        if req.stream:
            return await _stream(request, backend, req, seq, resp_id, created, word_seed)
        await backend.loop.wait_progress(seq, target - 1)
        text = output_text(word_seed, seq.num_output)
        body = completion_body(req, resp_id, created, text, reason, seq.num_output)
        return _json(body)
    finally:
        backend.loop.abort(seq)  # no-op once finished; frees the slot of a vanished client
        backend.in_flight -= 1
        fields["completion_tokens"] = seq.num_output
        fields["finish_reason"] = seq.finish_reason


async def _stream(
    request: web.Request,
    backend: SimBackend,
    req: GenerationRequest,
    seq: Sequence,
    resp_id: str,
    created: int,
    word_seed: int,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    request[LOG_FIELDS]["prepared"] = True
    backend.open_streams += 1
    sent = 0
    try:
        while True:
            await backend.loop.wait_progress(seq, sent)
            produced = seq.num_output
            parts: list[bytes] = []
            if sent == 0 and produced > 0 and req.kind == "chat":
                first_usage = usage(req.prompt_tokens, 0) if req.continuous_usage_stats else None
                role = stream_chunk(
                    req, resp_id, created, "", None, role=True, usage_so_far=first_usage
                )
                parts.append(role)
            for index in range(sent, produced):
                last = seq.finished and index == produced - 1
                running_usage = (
                    usage(req.prompt_tokens, index + 1) if req.continuous_usage_stats else None
                )
                parts.append(
                    stream_chunk(
                        req,
                        resp_id,
                        created,
                        token_text(word_seed, index),
                        seq.finish_reason if last else None,
                        usage_so_far=running_usage,
                    )
                )
            sent = produced
            if seq.finished:
                if req.include_usage:
                    parts.append(usage_chunk(req, resp_id, created, produced))
                parts.append(SSE_DONE)
                await response.write(b"".join(parts))
                await response.write_eof()
                return response
            await response.write(b"".join(parts))
    except ConnectionError:
        return response  # client gone mid-write; the caller aborts the sequence
    finally:
        backend.open_streams -= 1


# -- other endpoints -------------------------------------------------------------------------


async def _models(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    settings = backend.settings
    return _json(models_body(settings.served_names, settings.model, backend.config.max_model_len))


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _version(request: web.Request) -> web.Response:
    return _json({"version": VLLM_VERSION})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[BACKEND].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _get_fault(request: web.Request) -> web.Response:
    return _json(request.app[BACKEND].faults.current.to_json())


async def _set_fault(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND]
    payload = parse_json_body(await request.read())
    try:
        fault = parse_fault(payload)
    except ValueError as exc:
        raise APIError(400, str(exc), "mode") from None
    fields = request[LOG_FIELDS]
    # An event line next to the access line, so a log shows when a test broke this backend.
    backend.log(f"{utc_timestamp()} {backend.settings.name} fault {dumps(fault.to_json())}")
    if fault.mode == "exit":
        # Answer, log, then die without cleanup: the point is to look like a crash.
        response = _json(fault.to_json())
        await response.prepare(request)
        await response.write_eof()
        fields.update(status=200, duration_ms=0.0)
        backend.log(format_access_log_line(backend.settings.name, fields))
        sys.stdout.flush()
        backend.exit_process(fault.code)
        return response
    backend.faults.set(fault)
    return _json(fault.to_json())


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[BACKEND].stats())


def from_loopback(remote: str | None) -> bool:
    """Whether a peer address is this machine's loopback (127.0.0.0/8, ::1, v4-mapped)."""
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


async def requests_handler(request: web.Request) -> web.Response:
    # Headers carry secrets when a proxy in front leaks them: only this machine may read them,
    # also when the simulator listens on every interface.
    if not from_loopback(request.remote):
        raise APIError(403, "/_sim/requests answers loopback clients only.")
    return _json({"requests": list(request.app[BACKEND].recent)})


# -- assembly --------------------------------------------------------------------------------


def build_app(
    settings: SimSettings,
    *,
    log: LogSink = print_line,
    exit_process: Callable[[int], None] = os._exit,
) -> web.Application:
    """The simulated backend as an aiohttp Application (serve it with `make_runner`).

    `log` receives access-log lines (stdout by default); `exit_process` is what the `exit`
    fault calls, replaceable so in-process tests survive it.
    """
    config = settings.engine_config()
    engine = SimEngine(config)
    faults = FaultState()
    backend = SimBackend(
        settings=settings,
        config=config,
        engine=engine,
        loop=EngineLoop(engine, faults, settings.time_scale),
        faults=faults,
        log=log,
        exit_process=exit_process,
        rng=random.Random(settings.seed),
        registry=engine_registry(engine.metrics, engine.gauges, settings.served_names[0]),
    )
    app = web.Application(
        middlewares=[_frontend, _fault_gate], client_max_size=settings.max_body_bytes
    )
    app[BACKEND] = backend
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/version", _version)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/_sim/fault", _get_fault)
    app.router.add_post("/_sim/fault", _set_fault)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_get("/_sim/requests", requests_handler)
    app.on_response_prepare.append(_stamp_headers)
    app.on_startup.append(_start_engine)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_stop_engine)
    return app


async def _start_engine(app: web.Application) -> None:
    app[BACKEND].loop.start()


async def _drain(app: web.Application) -> None:
    # Runs once the listening socket is closed: requests in flight get shutdown_timeout seconds
    # to finish (the engine keeps stepping), then aiohttp cancels what is left.
    backend = app[BACKEND]
    deadline = time.monotonic() + backend.settings.shutdown_timeout
    while backend.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _stop_engine(app: web.Application) -> None:
    await app[BACKEND].loop.stop()


def make_runner(app: web.Application) -> web.AppRunner:
    """An AppRunner with the options the simulator needs (handler cancellation, no aiohttp log)."""
    return web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        shutdown_timeout=CANCEL_GRACE_S,
    )


def bind_socket(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening TCP socket whose accept queue holds `backlog` connections."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return sock


async def start_site(app: web.Application, settings: SimSettings) -> tuple[web.AppRunner, int]:
    """Start serving `app` on settings.host/port; returns the runner and the bound port."""
    runner = make_runner(app)
    await runner.setup()
    sock = bind_socket(settings.host, settings.port, settings.backlog)
    try:
        site = web.SockSite(runner, sock, backlog=settings.backlog)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, sock.getsockname()[1]


def startup_line(settings: SimSettings, port: int) -> str:
    """The one line printed when the server is ready (not an access-log line)."""
    config = settings.engine_config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return (
        f"{utc_timestamp()} {settings.name} simbackend listening on http://{host}:{port} "
        f"pid={os.getpid()} model={settings.model} "
        f"served_model_name={','.join(settings.served_names)} preset={settings.preset} "
        f"max_model_len={config.max_model_len} max_num_seqs={config.max_num_seqs} "
        f"max_num_batched_tokens={config.max_num_batched_tokens} "
        f"kv_cache_tokens={config.kv_cache_tokens} "
        f"prefill_ms_per_token={config.prefill_ms_per_token} itl_ms={config.itl_ms} "
        f"itl_ms_per_running_seq={config.itl_ms_per_running_seq} "
        f"time_scale={settings.time_scale} seed={settings.seed} vllm_version={VLLM_VERSION}"
    )


async def serve(settings: SimSettings, *, log: LogSink = print_line) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (the CLI's main loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if settings.startup_delay_s > 0:
        log(f"{utc_timestamp()} {settings.name} simbackend starting: listens in "
            f"{settings.startup_delay_s:g} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.startup_delay_s)
        if stop.is_set():
            return
    app = build_app(settings, log=log)
    runner, port = await start_site(app, settings)
    log(startup_line(settings, port))
    try:
        await stop.wait()
    finally:
        log(f"{utc_timestamp()} {settings.name} simbackend shutting down")
        await runner.cleanup()


class ServerThread:
    """A simulated backend on a background thread's event loop, for in-process tests.

    Use as a context manager; it always stops its loop and joins its thread on exit.
    """

    def __init__(self, settings: SimSettings, *, log: LogSink | None = None) -> None:
        self.settings = settings
        self.lines: list[str] = []
        self.exit_codes: list[int] = []  # what the exit fault asked for (the thread stays up)
        self._log = log if log is not None else self.lines.append
        self.port = 0
        self.backend: SimBackend | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="simbackend", daemon=True)

    @property
    def base_url(self) -> str:
        """http://host:port of the running server."""
        return f"http://{self.settings.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start and wait until the socket listens; raises what startup raised."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulated backend did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and join its thread."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run `fn` on the server's loop thread and return its result (safe state access)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() instead of dying silently
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = build_app(self.settings, log=self._log, exit_process=self.exit_codes.append)
        self.backend = app[BACKEND]
        runner, self.port = await start_site(app, self.settings)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
