"""The edge's services as data: what runs, where it listens, how it is checked, in what order,
and what it needs, built once from the fleet config and a placement.

Two placements use the same records: the sandbox (loopback, preferred ports or free ones, its
files under the state directory, this Python) and an edge host on AWS (fixed ports, Debian's
paths, the llmfleet virtualenv, secrets handed over as systemd credentials). The sandbox
launches each record as a process (`llmfleet.local.sandbox`); `infra/` renders each as a
systemd unit in the edge's cloud-init. Every port and path of the edge is defined here, and
nowhere else.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from llmfleet.config import FleetConfig
from llmfleet.config.aws import TlsMode
from llmfleet.edge.nginx import LISTEN_BACKLOG, GatewayHook, NginxPaths, TlsFiles, nginx_binary
from llmfleet.gateway.leases import lease_ttl_s

LOOPBACK = "127.0.0.1"

# Secrets, by name: a root-only file on an edge host (handed to a service by systemd), a 0600
# file in the sandbox's state directory.
REDIS_PASSWORD = "redis-password"
REDIS_EXPORTER_PASSWORD = "redis-exporter.json"  # the Redis exporter's own JSON format

# HTTPS's own port: the edge's TLS listener, and every host's way out to AWS's APIs and
# downloads.
HTTPS = 443
# The sandbox's HTTPS port with `up --tls` where free (443 needs root).
SANDBOX_HTTPS = 8443
# An edge host's certificate files: certbot's for mode acme, and mode certificate's copies of
# the SSM parameters, root-only, written at every boot (llmfleet.edge.boot tls-files).
ACME_WEBROOT = "/var/lib/llmfleet/acme"
ACME_LIVE_DIR = "/etc/letsencrypt/live"
CERTIFICATE_DIR = "/etc/llmfleet/tls"
# The sandbox's local CA and the edge's certificate from it, under its state directory.
SANDBOX_TLS_DIR = "tls"


@dataclass(frozen=True)
class EdgePorts:
    """Every port the edge uses. Only `http` and `https` face clients; everything else binds
    loopback."""

    http: int = 80
    https: int = HTTPS  # with edge.tls on (in the sandbox: `up --tls`; 0 without)
    gateway: int = 8090
    lease: int = 8091  # UDP: nginx's syslog lines that give in-flight slots back
    redis: int = 6379
    status: int = 8081  # nginx stub_status, read by the nginx exporter
    busy: int = 8082  # nginx's own "busy, retry later" answer, the fleet's backup server
    edge_exporter: int = 9180  # responses by status class, from nginx's access log
    nginx_exporter: int = 9113
    redis_exporter: int = 9121

    def scraped(self) -> dict[str, int]:
        """The loopback /metrics ports the monitor scrapes, through nginx on the edge's
        private address (see `MetricsProxy`)."""
        return {"edge-exporter": self.edge_exporter, "gateway": self.gateway,
                "nginx-exporter": self.nginx_exporter, "redis-exporter": self.redis_exporter}

    def tcp(self) -> dict[str, int]:
        """Every TCP port by field name (the lease port is UDP)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lease"}


@dataclass(frozen=True)
class MonitorPorts:
    """The monitor's ports: Prometheus, Alertmanager, Grafana (on the AWS monitor host only),
    and the sandbox's stand-in for Slack. On the monitor host each binds loopback and is
    reached through an SSM port forward."""

    prometheus: int = 9090
    alertmanager: int = 9093
    alert_sink: int = 9095
    grafana: int = 3000


EDGE_HOST_PORTS = EdgePorts()
MONITOR_HOST_PORTS = MonitorPorts()

# Kernel settings for a burst of thousands of clients at once (bench/surge.py has the figures).
EDGE_HOST_SYSCTLS: dict[str, str] = {
    # Linux silently caps every listen backlog here: nginx's and the gateway's accept queues
    # must hold a whole burst, or dropped SYNs cost clients a 1 s retransmit.
    "net.core.somaxconn": str(LISTEN_BACKLOG),
    "net.ipv4.tcp_max_syn_backlog": str(LISTEN_BACKLOG),
    # A burst leaves thousands of connections to the nodes in TIME_WAIT; the default reuses
    # their ports on loopback only.
    "net.ipv4.ip_local_port_range": "10240 65535",
    "net.ipv4.tcp_tw_reuse": "1",
}
# The same for vLLM in its container (its own network namespace): uvicorn listens with a
# backlog of 2048, which a burst of 5,000 overflows; the edge's connect timeout covers the
# retransmits, and these keep the queue itself from being the limit.
GPU_NODE_SYSCTLS: dict[str, str] = {
    "net.core.somaxconn": str(LISTEN_BACKLOG),
    "net.ipv4.tcp_max_syn_backlog": str(LISTEN_BACKLOG),
}
GPU_NODE_OPEN_FILES = 65536


@dataclass(frozen=True)
class GroupMembers:
    """AWS: the fleet is the instances of these Auto Scaling groups; their load is published
    for the scaler with the stack as dimension."""

    region: str
    groups: tuple[str, ...]
    stack: str


@dataclass(frozen=True)
class MembersFile:
    """Sandbox: the fleet is the backends listed in this JSON file."""

    path: str


@dataclass(frozen=True)
class Placement:
    """Where the edge's services run, and everything about them that depends on the place."""

    edge_host: bool
    ports: EdgePorts
    python: str
    config_file: str  # the stack's FleetConfig as JSON
    nginx_conf: str
    nginx: NginxPaths
    nginx_binary: str
    redis_binary: str
    redis_dir: str
    secrets_dir: str
    members: GroupMembers | MembersFile
    sync_state_file: str
    sync_interval_s: float
    auth: bool = True  # Redis and the gateway: API keys and limits
    access_log_exporter: bool = True
    packaged_exporters: bool = False  # Debian's nginx and Redis exporters, and stub_status
    # The address nginx forwards the monitor's scrapes from (None: the monitor is local).
    metrics_address: str | None = None
    environment_file: str | None = None
    tls: TlsFiles | None = None  # HTTPS on `ports.https`; port `http` then redirects to it

    @classmethod
    def for_edge_host(cls, config: FleetConfig, members: GroupMembers) -> Placement:
        """An edge instance on AWS (Ubuntu, Debian's packages, llmfleet in /opt/llmfleet)."""
        return cls(
            edge_host=True,
            ports=EDGE_HOST_PORTS,
            python="/opt/llmfleet/venv/bin/python",
            config_file="/etc/llmfleet/fleet.json",
            nginx_conf="/etc/nginx/nginx.conf",
            nginx=NginxPaths(),
            nginx_binary="/usr/sbin/nginx",
            redis_binary="/usr/bin/redis-server",
            redis_dir="/var/lib/redis",
            secrets_dir="/etc/llmfleet",
            members=members,
            sync_state_file="/run/llmfleet-sync/members.json",
            sync_interval_s=config.edge.sync_interval_s,
            packaged_exporters=True,
            # Written at first boot by the edge's boot script; systemd expands it.
            metrics_address="${LLMFLEET_PRIVATE_IP}",
            environment_file="/etc/llmfleet/edge.env",
            tls=edge_host_tls_files(config),
        )

    @classmethod
    def for_sandbox(cls, config: FleetConfig, state_dir: Path, ports: EdgePorts) -> Placement:
        """The sandbox: everything on loopback, every file under `state_dir`; HTTPS when
        `ports.https` is set, with a certificate from the sandbox's own CA."""
        nginx_dir = state_dir / "nginx"
        tls_dir = state_dir / SANDBOX_TLS_DIR
        return cls(
            edge_host=False,
            ports=ports,
            python=sys.executable,
            config_file=str(state_dir / "config.json"),
            nginx_conf=str(nginx_dir / "nginx.conf"),
            nginx=NginxPaths.under(nginx_dir),
            nginx_binary=nginx_binary(),
            redis_binary=_redis_binary() if config.sandbox.auth else "",
            redis_dir=str(state_dir / "redis"),
            secrets_dir=str(state_dir / "secrets"),
            members=MembersFile(str(state_dir / "backends.json")),
            sync_state_file=str(state_dir / "members.json"),
            sync_interval_s=config.edge.sync_interval_s,
            auth=config.sandbox.auth,
            access_log_exporter=config.sandbox.monitoring,
            tls=(TlsFiles(str(tls_dir / "edge.pem"), str(tls_dir / "edge-key.pem"))
                 if ports.https else None),
        )

    def secret_source(self, name: str) -> str:
        """Where the secret is kept."""
        return f"{self.secrets_dir}/{name}"

    def secret_for_service(self, name: str) -> str:
        """Where a service reads the secret: on an edge host systemd hands each service a
        private copy in its credentials directory (%d), so the file itself stays root-only."""
        return f"%d/{name}" if self.edge_host else self.secret_source(name)

    @property
    def listen(self) -> str:
        """nginx's public listen address: every interface on an edge host, loopback here."""
        return str(self.ports.http) if self.edge_host else f"{LOOPBACK}:{self.ports.http}"

    @property
    def tls_listen(self) -> str | None:
        """nginx's HTTPS listen address, when TLS is on."""
        if self.tls is None:
            return None
        return str(self.ports.https) if self.edge_host else f"{LOOPBACK}:{self.ports.https}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOOPBACK}:{self.ports.redis}/0"

    @property
    def gateway(self) -> GatewayHook | None:
        if not self.auth:
            return None
        return GatewayHook(f"{LOOPBACK}:{self.ports.gateway}", self.ports.lease)

    @property
    def busy_listen(self) -> str:
        return f"{LOOPBACK}:{self.ports.busy}"

    @property
    def status_listen(self) -> str | None:
        return f"{LOOPBACK}:{self.ports.status}" if self.packaged_exporters else None

    @property
    def reload_command(self) -> tuple[str, ...]:
        if self.edge_host:
            return ("systemctl", "reload", "nginx")
        return (self.nginx_binary, "-c", self.nginx_conf, "-e", self.nginx.error_log,
                "-s", "reload")


@dataclass(frozen=True)
class Service:
    """One process of the edge: how it starts, where it listens, how to tell it serves."""

    name: str
    summary: str
    argv: tuple[str, ...]
    listen: str
    url: str  # how a person or a client reaches it ("" when it serves nothing)
    # Answers once the service serves: http(s)://... (2xx), redis://... (PING), or file://...
    # (the file exists: the sync agent has made its first pass).
    health: str | None
    after: tuple[str, ...] = ()  # services that must answer before this one starts
    secrets: tuple[str, ...] = ()
    # Debian's own unit runs it on an edge host; `replaces_command` swaps in `argv`.
    packaged_unit: str | None = None
    replaces_command: bool = False
    user: str | None = "llmfleet"
    groups: tuple[str, ...] = ()
    runtime_directory: str | None = None
    environment_file: str | None = None
    # A directory on a volume of its own: the service never starts without it mounted.
    data_dir: str | None = None


def edge_services(config: FleetConfig, place: Placement) -> list[Service]:
    """The edge's services in start order."""
    ports = place.ports
    services: list[Service] = []
    if place.auth:
        services += [_redis(place), _gateway(config, place)]
    services.append(_sync(place))
    services.append(Service(
        name="nginx",
        summary="nginx: the public endpoint, in front of the fleet",
        argv=(place.nginx_binary, "-c", place.nginx_conf, "-e", place.nginx.error_log,
              "-g", "daemon off;"),
        listen=" ".join(filter(None, (place.listen, place.tls_listen))),
        url=(f"https://{LOOPBACK}:{ports.https}" if place.tls
             else f"http://{LOOPBACK}:{ports.http}"),
        # Plain HTTP's /health answers with TLS on too: the boot script's check, and the
        # sandbox's, need no certificate.
        health=f"http://{LOOPBACK}:{ports.http}/health",
        after=("sync",),
        packaged_unit="nginx.service",
        user=None,
    ))
    if place.access_log_exporter:
        services.append(Service(
            name="edge-exporter",
            summary="llmfleet edge exporter: responses by status class from nginx's access log",
            argv=(place.python, "-m", "llmfleet.observability.edge_exporter",
                  "--access-log", place.nginx.access_log, "--host", LOOPBACK,
                  "--port", str(ports.edge_exporter)),
            **_on_loopback(ports.edge_exporter, health="/health"),
            after=("nginx",),
            groups=("adm",),  # nginx's logs are www-data:adm 0640 on an edge host
        ))
    if place.packaged_exporters:
        services += _packaged_exporters(place)
    return services


def edge_host_tls_files(config: FleetConfig) -> TlsFiles | None:
    """Where an edge host's nginx finds its certificate chain and key for `edge.tls.mode`."""
    tls = config.edge.tls
    if tls.mode is TlsMode.ACME:
        live = f"{ACME_LIVE_DIR}/{tls.domain}"
        return TlsFiles(f"{live}/fullchain.pem", f"{live}/privkey.pem", ACME_WEBROOT)
    if tls.mode is TlsMode.CERTIFICATE:
        return TlsFiles(f"{CERTIFICATE_DIR}/fullchain.pem", f"{CERTIFICATE_DIR}/privkey.pem")
    return None


def redis_settings(place: Placement) -> list[str]:
    """Redis's settings in both places; the sandbox's keys live as long as the sandbox, an
    edge's must survive a restart of Redis or of the instance."""
    persistence = (["appendonly yes", "appendfsync everysec"] if place.edge_host
                   else ['save ""', "appendonly no"])
    return [f"bind {LOOPBACK}", "protected-mode yes", f"port {place.ports.redis}", *persistence]


def _redis(place: Placement) -> Service:
    return Service(
        name="redis",
        summary="Redis: API keys and rate-limit windows",
        argv=(place.redis_binary, f"{place.redis_dir}/redis.conf"),
        listen=f"{LOOPBACK}:{place.ports.redis}",
        url=place.redis_url,
        health=place.redis_url,
        packaged_unit="redis-server.service",
        user=None,
        # On an edge host the keys are on the stack's Redis volume (infra/edge.py): an empty
        # directory of the instance's own disk would answer 401 to every client.
        data_dir=place.redis_dir if place.edge_host else None,
    )


def _gateway(config: FleetConfig, place: Placement) -> Service:
    ports = place.ports
    return Service(
        name="gateway",
        summary="llmfleet gateway: API keys and rate limits for nginx's auth_request",
        argv=(place.python, "-m", "llmfleet.gateway", "--host", LOOPBACK,
              "--port", str(ports.gateway), "--config", place.config_file,
              "--redis-url", place.redis_url,
              "--redis-password-file", place.secret_for_service(REDIS_PASSWORD),
              "--lease-port", str(ports.lease),
              "--lease-ttl", f"{lease_ttl_s(config.load_balancing.read_timeout_s):g}",
              # Which nodes are ready: the fleet's capacity for the edge's queue.
              "--members-state", place.sync_state_file),
        **_on_loopback(ports.gateway, health="/health"),
        after=("redis",),
        secrets=(REDIS_PASSWORD,),
    )


def _sync(place: Placement) -> Service:
    argv = [place.python, "-m", "llmfleet.edge.sync",
            "--interval", f"{place.sync_interval_s:g}", "--config", place.config_file]
    if isinstance(place.members, GroupMembers):
        argv += ["--region", place.members.region, "--groups", *place.members.groups,
                 "--publish-load", place.members.stack]
        if place.access_log_exporter:
            argv += ["--edge-exporter", f"{LOOPBACK}:{place.ports.edge_exporter}"]
    else:
        argv += ["--members-file", place.members.path]
    argv += ["--conf", place.nginx_conf, "--listen", place.listen]
    if place.tls:
        argv += ["--tls-listen", place.tls_listen, "--tls-certificate", place.tls.certificate,
                 "--tls-key", place.tls.key]
        if place.tls.acme_webroot:
            argv += ["--acme-webroot", place.tls.acme_webroot]
    if not place.edge_host:
        argv += ["--runtime-dir", str(Path(place.nginx.pid).parent)]
    argv += ["--reload-command", shlex.join(place.reload_command),
             "--state-file", place.sync_state_file, "--busy-listen", place.busy_listen]
    if place.gateway:
        argv += ["--gateway", place.gateway.address, "--lease-port", str(place.ports.lease)]
    if place.status_listen:
        argv += ["--status-listen", place.status_listen]
    if place.metrics_address:
        argv += ["--metrics-address", place.metrics_address,
                 "--metrics-ports", *map(str, place.ports.scraped().values())]
    return Service(
        name="sync",
        summary="llmfleet upstream sync: fleet members, health-checked, into nginx",
        argv=tuple(argv),
        listen="-",
        url="",
        health=f"file://{place.sync_state_file}",
        # Its configs turn auth_request on: the gateway must answer before nginx has one.
        after=("gateway",) if place.auth else (),
        user=None,  # writes nginx's config and reloads it
        runtime_directory="llmfleet-sync" if place.edge_host else None,
        environment_file=place.environment_file,
    )


def _packaged_exporters(place: Placement) -> list[Service]:
    ports = place.ports
    return [
        Service(
            name="nginx-exporter",
            summary="nginx exporter: connections from stub_status",
            argv=("/usr/bin/prometheus-nginx-exporter",
                  f"--web.listen-address={LOOPBACK}:{ports.nginx_exporter}",
                  f"--nginx.scrape-uri=http://{LOOPBACK}:{ports.status}/stub_status"),
            **_on_loopback(ports.nginx_exporter, health="/metrics"),
            after=("nginx",),
            packaged_unit="prometheus-nginx-exporter.service",
            replaces_command=True,
            user=None,
        ),
        Service(
            name="redis-exporter",
            summary="Redis exporter",
            argv=("/usr/bin/prometheus-redis-exporter",
                  f"--web.listen-address={LOOPBACK}:{ports.redis_exporter}",
                  f"--redis.addr=redis://{LOOPBACK}:{ports.redis}",
                  f"--redis.password-file={place.secret_for_service(REDIS_EXPORTER_PASSWORD)}"),
            **_on_loopback(ports.redis_exporter, health="/metrics"),
            after=("redis",),
            secrets=(REDIS_EXPORTER_PASSWORD,),
            packaged_unit="prometheus-redis-exporter.service",
            replaces_command=True,
            user=None,
        ),
    ]


def _on_loopback(port: int, *, health: str) -> dict[str, str]:
    """Where an HTTP service on loopback listens, how to reach it, and its health URL."""
    url = f"http://{LOOPBACK}:{port}"
    return {"listen": f"{LOOPBACK}:{port}", "url": url, "health": url + health}


def _redis_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
    if found is None:
        raise FileNotFoundError("redis-server is not installed; run scripts/quickstart "
                                "(or apt-get install redis-server)")
    return found
