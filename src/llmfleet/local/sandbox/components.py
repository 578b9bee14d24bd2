"""What `up` starts, in order: the backends, then the edge's services from the same records the
AWS edge runs as systemd units (`llmfleet.services`), then monitoring."""

from __future__ import annotations

import secrets
from pathlib import Path

from llmfleet.edge.members import Member, write_members_file
from llmfleet.local.sandbox.backends import backend_command, backend_name
from llmfleet.local.sandbox.ports import LOOPBACK, free_udp_port
from llmfleet.local.sandbox.run import SandboxRun
from llmfleet.services import (
    EDGE_HOST_PORTS,
    REDIS_PASSWORD,
    SANDBOX_HTTPS,
    EdgePorts,
    Placement,
    edge_services,
    redis_settings,
)


def claim_edge_ports(run: SandboxRun, *, edge_port_explicit: bool,
                     tls: bool = False) -> EdgePorts:
    """The edge's ports on loopback: the configured or usual ones where free. The edge port is
    claimed first: it is the one a user asked for by number."""
    sandbox = run.config.sandbox
    http = run.port(sandbox.edge_port, explicit=edge_port_explicit)
    # Ports of services the sandbox does not run stay 0.
    return EdgePorts(
        http=http,
        https=run.port(SANDBOX_HTTPS) if tls else 0,
        gateway=run.port(sandbox.gateway_port or EDGE_HOST_PORTS.gateway) if sandbox.auth else 0,
        lease=free_udp_port() if sandbox.auth else 0,
        redis=run.port(sandbox.redis_port or EDGE_HOST_PORTS.redis) if sandbox.auth else 0,
        status=0,
        edge_exporter=run.port(EDGE_HOST_PORTS.edge_exporter) if sandbox.monitoring else 0,
        busy=run.port(EDGE_HOST_PORTS.busy),
        nginx_exporter=0,
        redis_exporter=0,
    )


def start_backends(run: SandboxRun) -> list[Member]:
    """N model servers on base_port, base_port + 1, ... (free ports where those are taken)."""
    sandbox = run.config.sandbox
    members, records = [], []
    for index in range(sandbox.backends):
        name = backend_name(index)
        port = run.port(sandbox.base_port + index)
        url = f"http://{LOOPBACK}:{port}"
        run.say(f"starting {name} ({sandbox.backend.value}) on {url}")
        records.append(run.launch(name, "backend", backend_command(run.config, index, port),
                                  url, url + "/health"))
        members.append(Member(name=name, host=LOOPBACK, port=port))
    run.wait_healthy(records)
    return members


def start_edge(run: SandboxRun, place: Placement, backends: list[Member], *,
               keep_keys: bool = True) -> None:
    """The files the edge's services share, then each service in order, healthy before the
    next one starts."""
    Path(place.nginx_conf).parent.mkdir(exist_ok=True)
    write_members_file(Path(place.members.path), backends)
    # The sandbox shows which backend served each response (the load report counts them).
    lb = run.config.load_balancing.model_copy(update={"expose_upstream_header": True})
    config = run.config.model_copy(update={"load_balancing": lb})
    Path(place.config_file).write_text(config.model_dump_json(indent=2))
    if place.auth:
        _write_redis_files(place, keep_keys)
    for service in edge_services(config, place):
        run.say(f"starting {service.name}" + (f" on {service.url}" if service.url else ""))
        run.wait_healthy([run.launch(service.name, service.name, service.argv, service.url,
                                     service.health)])


# Redis's persistence settings, which the sandbox sets itself.
_PERSISTENCE = ("save ", "appendonly ", "appendfsync ")


def _write_redis_files(place: Placement, keep_keys: bool) -> None:
    """A fresh random password (0600) and Redis's settings. With `keep_keys`, Redis appends
    every write to a file in its folder (AOF, flushed every second, as on the edge), so keys
    outlive a restart of Redis and `down`/`up`; without, it keeps nothing."""
    for folder in (place.secrets_dir, place.redis_dir):
        Path(folder).mkdir(mode=0o700, exist_ok=True)
    password = Path(place.secret_source(REDIS_PASSWORD))
    password.touch(mode=0o600)
    password.write_text(secrets.token_urlsafe(24))
    conf = Path(place.redis_dir) / "redis.conf"
    conf.touch(mode=0o600)
    persistence = (['save ""', "appendonly yes", "appendfsync everysec"] if keep_keys
                   else ['save ""', "appendonly no"])
    conf.write_text("\n".join([
        *(line for line in redis_settings(place) if not line.startswith(_PERSISTENCE)),
        *persistence, f"requirepass {password.read_text()}", f"dir {place.redis_dir}",
        "daemonize no", 'logfile ""', "",
    ]))
