"""Render the edge's nginx config from the fleet config, and check it with the real `nginx -t`.

The same template serves the sandbox and the AWS edge; only the listen address, the upstream
list and the file paths differ.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2

from llmfleet.config import FleetConfig
from llmfleet.edge.members import Member
from llmfleet.paths import images_dir

# The routes the edge passes to the model servers: vLLM's OpenAI-compatible API under /v1/
# (methods, path regex after /v1/). Anything else there the edge refuses itself (404, or 405
# for a method a route does not take), so vLLM's other routes (LoRA loading among them) are
# never reachable from outside.
API_ROUTES = (
    ("GET|HEAD", r"models(/[^/]+)?|responses/[^/]+"),
    ("POST", r"chat/completions|completions|embeddings|responses|responses/[^/]+/cancel"
             r"|audio/transcriptions|audio/translations|score|rerank"),
)

# OpenAI-shaped bodies for the errors nginx itself answers (no backend reached): a request it
# cannot read, a path or method it does not serve, a body, URI or headers too large, and the
# fleet's failures. Without them nginx answers its own HTML page.
ERROR_PAGES = (
    ("bad_request", 400, "invalid_request_error", "bad_request",
     "The request could not be read: malformed request line, headers or body framing."),
    ("not_found", 404, "invalid_request_error", "not_found",
     "Unknown path: the API serves /v1/models, /v1/chat/completions, /v1/completions, "
     "/v1/embeddings, /v1/responses, /v1/audio/*, /v1/score and /v1/rerank."),
    ("method_not_allowed", 405, "invalid_request_error", "method_not_allowed",
     "This method is not allowed here."),
    ("too_large", 413, "invalid_request_error", "request_too_large",
     "The request body is larger than this endpoint accepts."),
    ("uri_too_long", 414, "invalid_request_error", "uri_too_long",
     "The request URI is too long."),
    ("headers_too_large", 431, "invalid_request_error", "request_headers_too_large",
     "The request headers are too large."),
    ("not_implemented", 501, "invalid_request_error", "not_implemented",
     "The request uses a transfer encoding or feature this server does not implement."),
    ("http_version", 505, "invalid_request_error", "http_version_not_supported",
     "Use HTTP/1.1 or HTTP/1.0."),
    ("internal_error", 500, "server_error", "internal_error",
     "The edge could not handle the request. Please retry shortly."),
    ("bad_gateway", 502, "server_error", "upstream_unavailable",
     "No model server could take the request. Please retry shortly."),
    ("unavailable", 503, "server_error", "service_unavailable",
     "The service is overloaded or not ready yet. Please retry shortly."),
    ("gateway_timeout", 504, "server_error", "upstream_timeout",
     "The model server did not answer in time. Please retry shortly."),
)
# Statuses nginx uses inside that each page also answers: 494 is its "request header too
# large", which it would send as a 400 with an HTML page.
ERROR_PAGE_ALIASES = ((494, "headers_too_large"),)
# Where the pages are, as internal locations (`/_llmfleet/error/<name>`): from outside, 404.
ERROR_PAGE_PREFIX = "/_llmfleet/error/"

# The edge admits a burst of at least 5,000 simultaneous clients (students opening the chatbot
# at the same moment) without refusing any while connecting. Per worker: each request holds two
# connections, and a burst does not split evenly between workers, so one worker has room for
# 5,000 requests with more than half again to spare.
WORKER_CONNECTIONS = 16384
# Connections waiting to be accepted: a whole burst, even while every worker is busy. Linux
# silently caps it at net.core.somaxconn, which the edge host must raise to match.
LISTEN_BACKLOG = 8192
# A client's whole request head must arrive within this, and its body must not pause longer
# (nginx's client_header_timeout and client_body_timeout; nginx's default, 60 s).
CLIENT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Upstream(Member):
    """A fleet member as nginx gets it: `down` means finish what it has, take nothing new."""

    down: bool = False


@dataclass(frozen=True)
class GatewayHook:
    """Where the edge asks admit-or-refuse (nginx auth_request), and where it reports the end
    of requests that hold an in-flight slot (loopback syslog; 0 when no tier caps them)."""

    address: str
    lease_port: int = 0


@dataclass(frozen=True)
class MetricsProxy:
    """`/metrics` of loopback-only services, for the monitor: for each port, nginx listens on
    `address` (the edge's private address) and forwards `/metrics` alone to 127.0.0.1 on the
    same port. Nothing else gets through, so the gateway's `/auth` stays loopback-only."""

    address: str
    ports: tuple[int, ...]


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate chain (leaf first) and its key. With `acme_webroot`, plain HTTP also
    serves Let's Encrypt's HTTP-01 challenge files from that directory."""

    certificate: str
    key: str
    acme_webroot: str | None = None

    def ready(self) -> bool:
        """Both files are there (certbot writes them only after the edge has its address)."""
        return Path(self.certificate).is_file() and Path(self.key).is_file()


@dataclass(frozen=True)
class NginxPaths:
    """Where nginx keeps its runtime files; Debian's defaults on a real edge host."""

    pid: str = "/run/nginx.pid"
    error_log: str = "/var/log/nginx/error.log"
    access_log: str = "/var/log/nginx/access.log"
    temp_dir: str | None = None
    # The workers' user, when it must not be nginx's default (nobody with a root master).
    worker_user: str | None = None
    # The most files a worker may hold open, when the machine allows fewer than the edge asks
    # for: above the hard limit, nginx's setrlimit fails with an [alert] at every reload.
    open_files_cap: int | None = None

    @classmethod
    def under(cls, directory: Path) -> NginxPaths:
        """Every runtime file inside one directory (the sandbox's state dir).

        Started as root, nginx runs its workers as nobody, who cannot reach a temp dir inside
        a private directory (a state dir is often mode 0700): every request body too large for
        memory (over 16 kB) would fail. The workers then run as the user who owns the files."""
        return cls(
            pid=str(directory / "nginx.pid"),
            error_log=str(directory / "error.log"),
            access_log=str(directory / "access.log"),
            temp_dir=str(directory / "tmp"),
            worker_user=pwd.getpwuid(0).pw_name if os.geteuid() == 0 else None,
            open_files_cap=_hard_open_files_limit(),
        )

    def make_dirs(self) -> None:
        """nginx creates the temp folders but not their parent; create it."""
        if self.temp_dir:
            Path(self.temp_dir).mkdir(parents=True, exist_ok=True)


def _hard_open_files_limit() -> int | None:
    """This process's hard limit on open files, which the nginx it starts inherits; None when
    there is none."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def render_nginx_conf(
    config: FleetConfig,
    upstreams: list[Upstream],
    *,
    listen: str = "127.0.0.1:8080",
    paths: NginxPaths | None = None,
    worker_processes: str = "auto",
    worker_connections: int = WORKER_CONNECTIONS,
    listen_backlog: int = LISTEN_BACKLOG,
    status_listen: str | None = None,
    gateway: GatewayHook | None = None,
    metrics: MetricsProxy | None = None,
    busy_listen: str | None = None,
    tls: TlsFiles | None = None,
    tls_listen: str | None = None,
    client_timeout_s: float = CLIENT_TIMEOUT_S,
) -> str:
    """Return nginx.conf text for this fleet and these upstreams.

    `status_listen` (a loopback address) adds a loopback-only stub_status server for the
    nginx Prometheus exporter. `gateway` turns on API keys and rate limits (auth_request).
    `metrics` lets the monitor scrape loopback-only exporters (see `MetricsProxy`).
    `worker_connections` and `listen_backlog` size the edge for a burst of simultaneous
    clients (see WORKER_CONNECTIONS and LISTEN_BACKLOG). `busy_listen` (a loopback address)
    is where nginx answers "busy, retry later" itself when every node holds
    `load_balancing.max_requests_per_node` requests. `tls` (with `tls_listen`) serves the API
    over HTTPS on `tls_listen`, once both files exist; `listen` then answers /health (and
    the ACME challenge) and redirects everything else to HTTPS, before the files exist too,
    so the API never answers in clear text. `client_timeout_s` (see CLIENT_TIMEOUT_S) is
    shortened by tests that watch a slow client being cut.
    """
    if bool(tls) != bool(tls_listen):
        raise ValueError("tls and tls_listen go together")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir() / "edge"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # nginx config, not HTML
    )
    env.filters["nginx_seconds"] = _nginx_seconds
    return env.get_template("nginx.conf.j2").render(
        stack=config.stack_name,
        strategy=config.load_balancing.strategy.value,
        lb=config.load_balancing,
        upstreams=upstreams,
        listen=listen,
        paths=paths or NginxPaths(),
        worker_processes=worker_processes,
        worker_connections=worker_connections,
        listen_backlog=listen_backlog,
        client_timeout_s=client_timeout_s,
        error_pages=ERROR_PAGES,
        api_routes=API_ROUTES,
        error_prefix=ERROR_PAGE_PREFIX,
        error_page_statuses=[*((page[1], page[0]) for page in ERROR_PAGES),
                             *ERROR_PAGE_ALIASES],
        status_listen=status_listen,
        busy_listen=busy_listen if config.load_balancing.max_requests_per_node else None,
        serving=any(not u.down for u in upstreams),
        gateway=gateway,
        metrics=metrics,
        tls=tls,
        tls_listen=tls_listen,
        tls_port=tls_listen.rsplit(":", 1)[-1] if tls_listen else None,
        tls_ready=tls is not None and tls.ready(),
    )


def nginx_binary() -> str:
    """Path of the nginx executable; Debian puts it in /usr/sbin, often off a user's PATH."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise FileNotFoundError(
            "nginx is not installed; run scripts/quickstart (or apt-get install nginx)"
        )
    return found


@dataclass(frozen=True)
class NginxCheck:
    ok: bool
    output: str


def check_nginx_conf(conf_path: Path, error_log: Path | None = None) -> NginxCheck:
    """Run the real `nginx -t` on a rendered file."""
    error_log = error_log or conf_path.with_name("nginx-check.log")
    result = subprocess.run(
        [nginx_binary(), "-t", "-q", "-c", str(conf_path.resolve()), "-e", str(error_log)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return NginxCheck(result.returncode == 0, (result.stdout + result.stderr).strip())


def _nginx_seconds(value: float) -> str:
    """nginx time syntax; milliseconds when the value is not whole seconds."""
    return f"{int(value)}s" if float(value).is_integer() else f"{round(value * 1000)}ms"
