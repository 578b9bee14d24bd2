"""Render Prometheus' config from images/monitor/prometheus.yml.j2 and check it with promtool.

The sandbox lists its edge and monitor processes as static targets and its backends, which the
autoscaler starts and stops, in a file Prometheus watches (file-based discovery); on AWS the
monitor instance discovers the stack's instances through the EC2 API by their `llmfleet:stack`
and `llmfleet:role` tags.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from llmfleet.config import FleetConfig
from llmfleet.config.aws import DCGM_EXPORTER_PORT, NODE_EXPORTER_PORT
from llmfleet.observability.promql import duration
from llmfleet.paths import images_dir
from llmfleet.services import EDGE_HOST_PORTS, MONITOR_HOST_PORTS


@dataclass(frozen=True)
class Target:
    """One static scrape target and the labels it carries (`node`, `role`, ...)."""

    address: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One scrape job: static targets, the targets listed in `file_sd` (a JSON file that
    `write_targets_file` rewrites), or else EC2 instances of `roles`."""

    name: str
    static: tuple[Target, ...] | None = None
    file_sd: str | None = None
    port: int = 0
    roles: tuple[str, ...] = ()
    metrics_path: str = "/metrics"


@dataclass(frozen=True)
class Ec2Discovery:
    region: str
    stack: str  # the Pulumi stack name, as in the `llmfleet:stack` tag


def render_prometheus_config(
    config: FleetConfig,
    jobs: Sequence[Job],
    *,
    rule_files: Sequence[str],
    alertmanagers: Sequence[str],
    ec2: Ec2Discovery | None = None,
) -> str:
    """prometheus.yml text for these jobs; intervals come from `config.alerts`."""
    if ec2 is None and any(job.static is None and job.file_sd is None for job in jobs):
        raise ValueError("jobs without static targets or a targets file need EC2 discovery "
                         "settings")
    alerts = config.alerts
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir() / "monitor"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    return env.get_template("prometheus.yml.j2").render(
        stack=config.stack_name if ec2 is None else ec2.stack,
        scrape_interval=duration(alerts.scrape_interval_s),
        # A scrape must end before the next one starts.
        scrape_timeout=duration(min(alerts.scrape_interval_s * 0.8, 10)),
        evaluation_interval=duration(alerts.evaluation_interval_s),
        rule_files=list(rule_files),
        alertmanagers=list(alertmanagers),
        jobs=jobs,
        ec2=ec2,
    )


def aws_prometheus_config(config: FleetConfig, *, region: str, stack: str,
                          rules_file: str = "/etc/prometheus/llmfleet.rules.yml") -> str:
    """The monitor instance's config: discovered fleet and edge, itself and Alertmanager."""
    gpu, edge = ("gpu-node",), ("edge",)  # the instances' `llmfleet:role` tags
    discovered = [
        Job("vllm", port=config.gpu_node.vllm_port, roles=gpu),
        Job("dcgm", port=DCGM_EXPORTER_PORT, roles=gpu),
        Job("node", port=NODE_EXPORTER_PORT, roles=gpu),
        # The edge's ports are nginx on its private address, forwarding /metrics only.
        Job("edge", port=EDGE_HOST_PORTS.edge_exporter, roles=edge),
        Job("gateway", port=EDGE_HOST_PORTS.gateway, roles=edge),
        Job("nginx", port=EDGE_HOST_PORTS.nginx_exporter, roles=edge),  # stub_status
        Job("redis", port=EDGE_HOST_PORTS.redis_exporter, roles=edge),
    ]
    monitor = MONITOR_HOST_PORTS
    local = [
        Job(name, static=(Target(f"localhost:{port}", {"role": "monitor"}),))
        for name, port in (("prometheus", monitor.prometheus),
                           ("alertmanager", monitor.alertmanager))
    ]
    return render_prometheus_config(
        config, [*discovered, *local], rule_files=[rules_file],
        alertmanagers=[f"localhost:{monitor.alertmanager}"],
        ec2=Ec2Discovery(region, stack),
    )


def write_targets_file(path: Path, targets: Sequence[Target]) -> None:
    """Replace a file-based discovery file in one step: Prometheus sees each rewrite at once
    and never reads half a list."""
    candidate = path.with_name(path.name + ".tmp")
    candidate.write_text(json.dumps(
        [{"targets": [t.address], "labels": t.labels} for t in targets], indent=2))
    os.replace(candidate, path)


@dataclass(frozen=True)
class ToolCheck:
    ok: bool
    output: str


def promtool(*args: str | Path, timeout_s: float = 60) -> ToolCheck:
    """Run `promtool` (e.g. `check config`, `check rules`, `test rules`)."""
    result = subprocess.run([tool_binary("promtool"), *map(str, args)], capture_output=True,
                            text=True, timeout=timeout_s, check=False)
    return ToolCheck(result.returncode == 0, (result.stdout + result.stderr).strip())


def tool_binary(*names: str) -> str:
    """The first of `names` on PATH (Debian also uses /usr/sbin); a clear error otherwise."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/sbin")
        if found:
            return found
    raise FileNotFoundError(
        f"{names[0]} is not installed; run scripts/quickstart "
        "(or apt-get install prometheus prometheus-alertmanager)"
    )
