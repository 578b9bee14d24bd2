"""The upstream sync agent the AWS edge runs: GPU group members in, nginx config out.

Each pass lists the instances of the two GPU Auto Scaling groups, renders the nginx config with
them as upstreams, and, only when the text changed, checks it with the real `nginx -t` before it
replaces the live file and reloads nginx. A config nginx refuses never replaces the last good one.
With `--gateway` every rendering asks the gateway about API keys and limits (auth_request).

    python -m llmfleet.edge.sync --once --config fleet.json --groups SPOT ON_DEMAND ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from llmfleet.config import ConfigError, FleetConfig, validate
from llmfleet.edge.nginx import (
    GatewayHook,
    MetricsProxy,
    NginxPaths,
    Upstream,
    check_nginx_conf,
    render_nginx_conf,
)

log = logging.getLogger("llmfleet.edge.sync")

# The drain Lambda (spot interruption warning) sets this tag on an instance it takes out.
DRAINING_TAG = "llmfleet:draining"
# Auto Scaling's lifecycle states: in service takes traffic; terminating finishes what it has.
SERVING = frozenset({"InService"})
TERMINATING = frozenset({"Terminating", "Terminating:Wait", "Terminating:Proceed"})


@dataclass(frozen=True)
class Member:
    """One instance of a GPU group, with what the edge needs to know about it."""

    instance_id: str
    lifecycle_state: str
    private_ip: str | None
    instance_type: str | None
    draining: bool


def list_members(autoscaling: Any, ec2: Any, groups: Sequence[str]) -> list[Member]:
    """The instances of `groups` (boto3 autoscaling and ec2 clients), with their addresses."""
    states: dict[str, str] = {}
    pages = autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
        AutoScalingGroupNames=list(groups)
    )
    for page in pages:
        for group in page["AutoScalingGroups"]:
            for instance in group["Instances"]:
                states[instance["InstanceId"]] = instance["LifecycleState"]
    if not states:
        return []
    members = []
    for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=sorted(states)):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
                members.append(
                    Member(
                        instance_id=instance["InstanceId"],
                        lifecycle_state=states[instance["InstanceId"]],
                        private_ip=instance.get("PrivateIpAddress"),
                        instance_type=instance.get("InstanceType"),
                        draining=tags.get(DRAINING_TAG, "").lower() not in ("", "false"),
                    )
                )
    return members


def upstreams_for(members: Iterable[Member], port: int) -> list[Upstream]:
    """In service → an upstream; terminating or tagged draining → `down` (nginx finishes what
    the node has and sends it nothing new); anything else (pending, warm pool, standby) → left
    out. Sorted, so the same fleet always renders the same text."""
    upstreams = []
    for member in members:
        if member.private_ip is None:
            continue
        serving = member.lifecycle_state in SERVING
        if not serving and member.lifecycle_state not in TERMINATING:
            continue
        upstreams.append(
            Upstream(
                name=member.instance_id,
                host=member.private_ip,
                port=port,
                instance_type=member.instance_type,
                down=member.draining or not serving,
            )
        )
    return sorted(upstreams, key=lambda u: u.name)


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    RELOADED = "reloaded"
    REJECTED = "rejected"  # nginx -t refused the new text; the last good config stays
    RELOAD_FAILED = "reload_failed"  # the file is in place but the reload command failed


@dataclass(frozen=True)
class SyncResult:
    outcome: Outcome
    upstreams: tuple[Upstream, ...]
    detail: str = ""


@dataclass
class Syncer:
    """One edge's sync loop: where the config lives, how nginx is reloaded, what it listens on,
    and what else each rendering carries (the gateway, stub_status, the monitor's /metrics)."""

    config: FleetConfig
    conf_path: Path
    reload: Callable[[], subprocess.CompletedProcess]
    list_members: Callable[[], list[Member]]
    listen: str = "80"
    paths: NginxPaths = field(default_factory=NginxPaths)
    gateway: GatewayHook | None = None
    status_listen: str | None = None
    metrics: MetricsProxy | None = None

    def sync_once(self) -> SyncResult:
        upstreams = upstreams_for(self.list_members(), self.config.gpu_node.vllm_port)
        text = render_nginx_conf(self.config, upstreams, listen=self.listen, paths=self.paths,
                                 gateway=self.gateway, status_listen=self.status_listen,
                                 metrics=self.metrics)
        current = self.conf_path.read_text() if self.conf_path.exists() else None
        if text == current:
            return SyncResult(Outcome.UNCHANGED, tuple(upstreams))
        candidate = self.conf_path.with_name(self.conf_path.name + ".candidate")
        candidate.write_text(text)
        self.paths.make_dirs()
        # nginx -t's own messages go where nginx's errors go, not beside the config.
        check = check_nginx_conf(candidate, Path(self.paths.error_log))
        if not check.ok:
            candidate.unlink()
            log.error("nginx -t refused the new config; keeping the last good one: %s",
                      check.output)
            return SyncResult(Outcome.REJECTED, tuple(upstreams), check.output)
        # Same directory, so the rename is atomic: nginx never reads a half-written file.
        os.replace(candidate, self.conf_path)
        reloaded = self.reload()
        if reloaded.returncode != 0:
            detail = f"{reloaded.stdout or ''}{reloaded.stderr or ''}".strip()
            log.error("reloading nginx failed (exit %s): %s", reloaded.returncode, detail)
            return SyncResult(Outcome.RELOAD_FAILED, tuple(upstreams), detail)
        log.info("nginx reloaded with %d upstreams (%d down)", len(upstreams),
                 sum(u.down for u in upstreams))
        return SyncResult(Outcome.RELOADED, tuple(upstreams))


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = validate(_read_json(args.config), str(args.config))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2

    import boto3  # only here: the pure parts above need no AWS SDK

    session = boto3.session.Session(region_name=args.region)
    autoscaling, ec2 = session.client("autoscaling"), session.client("ec2")
    syncer = Syncer(
        config=config,
        conf_path=args.conf,
        reload=run_command(shlex.split(args.reload_command)),
        list_members=lambda: list_members(autoscaling, ec2, args.groups),
        listen=args.listen,
        paths=NginxPaths.under(args.runtime_dir) if args.runtime_dir else NginxPaths(),
        gateway=GatewayHook(args.gateway, args.lease_port) if args.gateway else None,
        status_listen=args.status_listen,
        metrics=(MetricsProxy(args.metrics_address, tuple(args.metrics_ports))
                 if args.metrics_address else None),
    )
    if args.once:
        return 0 if syncer.sync_once().outcome in (Outcome.UNCHANGED, Outcome.RELOADED) else 1
    while True:
        try:
            syncer.sync_once()
        except Exception:
            # An AWS API hiccup must not stop the agent; the next pass tries again.
            log.exception("sync pass failed")
        time.sleep(args.interval)


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
    parser.add_argument("--groups", nargs="+", required=True, metavar="GROUP",
                        help="GPU Auto Scaling group names (spot and on-demand fallback)")
    parser.add_argument("--region", default=None, help="AWS region (default: boto3's)")
    parser.add_argument("--conf", type=Path, default=Path("/etc/nginx/nginx.conf"),
                        help="the live nginx config to keep in sync")
    parser.add_argument("--listen", default="80", help="nginx listen address (default 80)")
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
    return parser


if __name__ == "__main__":
    sys.exit(main())
