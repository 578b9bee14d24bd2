"""The upstream sync agent: fleet members in, nginx config out, on AWS and in the sandbox.

Each pass lists the fleet's members (the two GPU Auto Scaling groups on AWS, the backend
processes in the sandbox: `llmfleet.edge.members`), probes each one's `/health` (active health
checks), renders the nginx config, and, only when the text changed, checks it with the real
`nginx -t` before it replaces the live file and reloads nginx. A config nginx refuses never
replaces the last good one. With `--gateway` every rendering asks the gateway about API keys
and limits (auth_request).

A member that has never answered its health check has not joined yet (it may still be loading
its model) and gets no traffic; one that answered before and fails now, or that is draining,
is marked `down`: nginx finishes what it has and sends it nothing new.

On AWS (`--publish-load STACK`) each pass also publishes the ready members' load to CloudWatch,
where the scaler Lambda reads it (`llmfleet.edge.load`).

    python -m llmfleet.edge.sync --interval 10 --config fleet.json --groups SPOT ON_DEMAND ...
    python -m llmfleet.edge.sync --interval 10 --config fleet.json --members-file backends.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from llmfleet.config import ConfigError, FleetConfig, validate
from llmfleet.edge.load import LoadPublisher
from llmfleet.edge.members import Member, group_members, read_members_file
from llmfleet.edge.nginx import (
    GatewayHook,
    MetricsProxy,
    NginxPaths,
    TlsFiles,
    Upstream,
    check_nginx_conf,
    render_nginx_conf,
)

log = logging.getLogger("llmfleet.edge.sync")

# Long enough for a loaded vLLM to answer, short enough that a hung node does not stall a pass.
HEALTH_TIMEOUT_S = 2.0


class MemberState(StrEnum):
    BOOTING = "booting"  # never answered /health: not joined, no traffic
    READY = "ready"  # answers /health: takes traffic
    DRAINING = "draining"  # finishing what it has, nothing new
    DOWN = "down"  # answered before, fails now: nothing new until it answers again


@dataclass(frozen=True)
class MemberView:
    """One member as the edge sees it after a pass."""

    member: Member
    state: MemberState


def probe_health(member: Member, timeout_s: float = HEALTH_TIMEOUT_S) -> bool:
    """True when the member's `/health` answers 2xx within the timeout."""
    connection = http.client.HTTPConnection(member.host, member.port, timeout=timeout_s)
    try:
        connection.request("GET", "/health")
        return 200 <= connection.getresponse().status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def upstreams_for(views: Sequence[MemberView]) -> list[Upstream]:
    """Ready members take traffic; draining and failing ones are `down`; booting ones stay
    out. Sorted, so the same fleet always renders the same text."""
    upstreams = [
        Upstream(**asdict(view.member), down=view.state is not MemberState.READY)
        for view in views if view.state is not MemberState.BOOTING
    ]
    return sorted(upstreams, key=lambda u: u.name)


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    RELOADED = "reloaded"
    WRITTEN = "written"  # nginx is not running: the file is in place for when it starts
    REJECTED = "rejected"  # nginx -t refused the new text; the last good config stays
    RELOAD_FAILED = "reload_failed"  # the file is in place but the reload command failed


@dataclass(frozen=True)
class SyncResult:
    outcome: Outcome
    members: tuple[MemberView, ...]
    upstreams: tuple[Upstream, ...]
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome not in (Outcome.REJECTED, Outcome.RELOAD_FAILED)


@dataclass
class Syncer:
    """One edge's sync loop: where the members come from, how they are probed, where the
    config lives, how nginx is reloaded, what it listens on, and what else each rendering
    carries (the gateway, stub_status, the monitor's /metrics). `state_file`, when set,
    gets every pass's view of the members (the sandbox's `status` reads it)."""

    config: FleetConfig
    conf_path: Path
    reload: Callable[[], subprocess.CompletedProcess]
    list_members: Callable[[], list[Member]]
    probe: Callable[[Member], bool] = probe_health
    listen: str = "80"
    paths: NginxPaths = field(default_factory=NginxPaths)
    gateway: GatewayHook | None = None
    status_listen: str | None = None
    metrics: MetricsProxy | None = None
    busy_listen: str | None = None
    tls: TlsFiles | None = None
    tls_listen: str | None = None
    state_file: Path | None = None
    _joined: set[str] = field(default_factory=set)
    _last: dict[str, MemberState] = field(default_factory=dict)

    def sync_once(self) -> SyncResult:
        views = self.observe(self.list_members())
        upstreams = upstreams_for(views)
        outcome, detail = self._apply(upstreams)
        result = SyncResult(outcome, tuple(views), tuple(upstreams), detail)
        if self.state_file is not None:
            _write_state(self.state_file, result)
        return result

    def observe(self, members: Sequence[Member]) -> list[MemberView]:
        """Each member's state from one round of health probes (in parallel: one hung node
        must not hold up the others)."""
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(members)))) as pool:
            healthy = list(pool.map(
                lambda m: not m.draining and self.probe(m), members))
        views = []
        for member, answered in zip(members, healthy, strict=True):
            if answered:
                self._joined.add(member.name)
            joined = member.name in self._joined
            if member.draining:
                state = MemberState.DRAINING if joined else MemberState.BOOTING
            elif answered:
                state = MemberState.READY
            else:
                state = MemberState.DOWN if joined else MemberState.BOOTING
            views.append(MemberView(member, state))
            if self._last.get(member.name) is not state:
                log.info("%s (%s) is %s", member.name, member.address, state.value)
        self._joined &= {m.name for m in members}  # a member that left must join anew
        self._last = {v.member.name: v.state for v in views}
        return views

    def _apply(self, upstreams: list[Upstream]) -> tuple[Outcome, str]:
        text = render_nginx_conf(self.config, upstreams, listen=self.listen, paths=self.paths,
                                 gateway=self.gateway, status_listen=self.status_listen,
                                 metrics=self.metrics, busy_listen=self.busy_listen,
                                 tls=self.tls, tls_listen=self.tls_listen)
        current = self.conf_path.read_text() if self.conf_path.exists() else None
        if text == current:
            return Outcome.UNCHANGED, ""
        candidate = self.conf_path.with_name(self.conf_path.name + ".candidate")
        candidate.write_text(text)
        self.paths.make_dirs()
        # nginx -t's own messages go where nginx's errors go, not beside the config.
        check = check_nginx_conf(candidate, Path(self.paths.error_log))
        if not check.ok:
            candidate.unlink()
            log.error("nginx -t refused the new config; keeping the last good one: %s",
                      check.output)
            return Outcome.REJECTED, check.output
        # Same directory, so the rename is atomic: nginx never reads a half-written file.
        os.replace(candidate, self.conf_path)
        if not nginx_running(Path(self.paths.pid)):
            log.info("nginx is not running yet; it starts with the new config")
            return Outcome.WRITTEN, ""
        reloaded = self.reload()
        if reloaded.returncode != 0:
            detail = f"{reloaded.stdout or ''}{reloaded.stderr or ''}".strip()
            log.error("reloading nginx failed (exit %s): %s", reloaded.returncode, detail)
            return Outcome.RELOAD_FAILED, detail
        log.info("nginx reloaded with %d upstreams (%d down)", len(upstreams),
                 sum(u.down for u in upstreams))
        return Outcome.RELOADED, ""


def nginx_running(pid_file: Path) -> bool:
    """Whether the nginx of this pid file runs (`nginx -t` leaves an empty pid file behind,
    so the file alone proves nothing)."""
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def read_state(path: Path) -> dict[str, MemberState]:
    """Each member's state by name, as the last pass wrote it (nothing yet: empty)."""
    try:
        members = json.loads(path.read_text())["members"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    return {m["name"]: MemberState(m["state"]) for m in members}


def _write_state(path: Path, result: SyncResult) -> None:
    candidate = path.with_name(path.name + ".tmp")
    candidate.write_text(json.dumps({
        "time": time.time(),
        "outcome": result.outcome.value,
        "members": [{"name": v.member.name, "address": v.member.address,
                     "state": v.state.value} for v in result.members],
    }, indent=2))
    os.replace(candidate, path)


def run_command(command: Sequence[str]) -> Callable[[], subprocess.CompletedProcess]:
    """The reload step as a callable: `systemctl reload nginx` on an edge, anything in tests."""
    def run() -> subprocess.CompletedProcess:
        return subprocess.run(list(command), capture_output=True, text=True, timeout=60,
                              check=False)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.lease_port and not args.gateway:
        parser.error("--lease-port needs --gateway")
    if bool(args.metrics_address) != bool(args.metrics_ports):
        parser.error("--metrics-address and --metrics-ports go together")
    if args.edge_exporter and not args.publish_load:
        parser.error("--edge-exporter needs --publish-load")
    if not bool(args.tls_listen) == bool(args.tls_certificate) == bool(args.tls_key) or (
            args.acme_webroot and not args.tls_listen):
        parser.error("--tls-listen, --tls-certificate and --tls-key go together "
                     "(and --acme-webroot needs them)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = validate(_read_json(args.config), str(args.config))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    syncer = Syncer(
        config=config,
        conf_path=args.conf,
        reload=run_command(shlex.split(args.reload_command)),
        list_members=_member_source(args, config),
        probe=probe_health,
        listen=args.listen,
        paths=NginxPaths.under(args.runtime_dir) if args.runtime_dir else NginxPaths(),
        gateway=GatewayHook(args.gateway, args.lease_port) if args.gateway else None,
        status_listen=args.status_listen,
        metrics=(MetricsProxy(args.metrics_address, tuple(args.metrics_ports))
                 if args.metrics_address else None),
        state_file=args.state_file,
        busy_listen=args.busy_listen,
        tls=(TlsFiles(str(args.tls_certificate), str(args.tls_key),
                      str(args.acme_webroot) if args.acme_webroot else None)
             if args.tls_listen else None),
        tls_listen=args.tls_listen,
    )
    if args.once:
        return 0 if syncer.sync_once().ok else 1
    publisher = _load_publisher(args, config)
    while True:
        started = time.monotonic()
        try:
            result = syncer.sync_once()
            if publisher is not None:
                publisher.publish([v.member for v in result.members
                                   if v.state is MemberState.READY])
        except Exception:
            # An AWS API hiccup must not stop the agent; the next pass tries again.
            log.exception("sync pass failed")
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))


def _member_source(args: argparse.Namespace, config: FleetConfig
                   ) -> Callable[[], list[Member]]:
    if args.members_file:
        return lambda: read_members_file(args.members_file)
    import boto3  # only here: the sandbox's agent needs no AWS SDK

    session = boto3.session.Session(region_name=args.region)
    autoscaling, ec2 = session.client("autoscaling"), session.client("ec2")
    port = config.gpu_node.vllm_port
    return lambda: group_members(autoscaling, ec2, args.groups, port)


def _load_publisher(args: argparse.Namespace, config: FleetConfig) -> LoadPublisher | None:
    if not args.publish_load:
        return None
    import boto3

    cloudwatch = boto3.session.Session(region_name=args.region).client("cloudwatch")
    exporter = None
    if args.edge_exporter:
        host, _, port = args.edge_exporter.rpartition(":")
        exporter = (host, int(port))
    return LoadPublisher(config, args.publish_load, cloudwatch, exporter)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.edge.sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--once", action="store_true", help="one pass; exit 1 if nginx refused it")
    when.add_argument("--interval", type=float, metavar="S", help="a pass every S seconds")
    parser.add_argument("--config", type=Path, required=True,
                        help="the stack's FleetConfig as JSON (/etc/llmfleet/fleet.json)")
    members = parser.add_mutually_exclusive_group(required=True)
    members.add_argument("--groups", nargs="+", metavar="GROUP",
                         help="GPU Auto Scaling group names (spot and on-demand fallback)")
    members.add_argument("--members-file", type=Path, metavar="FILE",
                         help="a JSON list of members (the sandbox's backends)")
    parser.add_argument("--region", default=None, help="AWS region (default: boto3's)")
    parser.add_argument("--conf", type=Path, default=Path("/etc/nginx/nginx.conf"),
                        help="the live nginx config to keep in sync")
    parser.add_argument("--listen", default="80", help="nginx listen address (default 80)")
    parser.add_argument("--tls-listen", metavar="ADDRESS",
                        help="serve the API over HTTPS here; --listen then redirects to it")
    parser.add_argument("--tls-certificate", type=Path, metavar="FILE",
                        help="PEM certificate chain, leaf first (HTTPS starts once it exists)")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="its PEM private key")
    parser.add_argument("--acme-webroot", type=Path, metavar="DIR",
                        help="serve Let's Encrypt's HTTP-01 challenge from here on --listen")
    parser.add_argument("--runtime-dir", type=Path, default=None,
                        help="put nginx's pid, logs and temp files here (default: Debian's)")
    parser.add_argument("--reload-command", default="systemctl reload nginx",
                        help="how to reload nginx once a new config is in place")
    parser.add_argument("--gateway", metavar="HOST:PORT",
                        help="turn on API keys and rate limits: the gateway nginx asks")
    parser.add_argument("--lease-port", type=int, default=0, metavar="PORT",
                        help="the gateway's loopback UDP port for the end of leased requests")
    parser.add_argument("--status-listen", metavar="ADDRESS",
                        help="a loopback stub_status server for the nginx exporter")
    parser.add_argument("--metrics-address", metavar="IP",
                        help="the private address where the monitor scrapes /metrics")
    parser.add_argument("--metrics-ports", type=int, nargs="+", metavar="PORT",
                        help="loopback /metrics ports nginx forwards from --metrics-address")
    parser.add_argument("--busy-listen", metavar="ADDRESS",
                        help="a loopback address where nginx answers busy when every node is "
                             "full (load_balancing.max_requests_per_node)")
    parser.add_argument("--publish-load", metavar="STACK",
                        help="after each pass, publish the ready members' load to CloudWatch "
                             "for the scaler, with this stack as dimension")
    parser.add_argument("--edge-exporter", metavar="HOST:PORT",
                        help="the edge exporter whose answered requests give the arrival rate "
                             "published with --publish-load")
    parser.add_argument("--state-file", type=Path, metavar="FILE",
                        help="write each pass's member states here (JSON)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
