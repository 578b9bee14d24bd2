"""Monitoring in the sandbox: Prometheus and Alertmanager on loopback, with the same rules and
templates as the AWS monitor instance.

Prometheus scrapes the backends, the edge (through the access-log exporter), the gateway when
one runs, Alertmanager and itself. The backends come and go with the autoscaler, so they are
listed in a targets file Prometheus watches, rewritten with the members file (its path is in
the sandbox's state); everything else is a static target. Alertmanager sends to Slack when
`alerts.slack_webhook_file` is set; otherwise to the local alert sink, whose log shows every
alert.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from llmfleet.edge.members import Member
from llmfleet.local.sandbox.ports import LOOPBACK
from llmfleet.local.sandbox.run import SandboxError, SandboxRun
from llmfleet.observability.alertmanager import render_alertmanager_config
from llmfleet.observability.prometheus import (
    Job,
    Target,
    render_prometheus_config,
    tool_binary,
    write_targets_file,
)
from llmfleet.observability.rules import render_rules
from llmfleet.services import MONITOR_HOST_PORTS, MonitorPorts, Placement


def start_monitoring(run: SandboxRun, place: Placement, backends: list[Member]) -> MonitorPorts:
    """Alertmanager (and the alert sink it posts to when there is no Slack webhook), then
    Prometheus with the fleet's rules; their ports are the usual ones where free."""
    webhook_file = run.config.alerts.slack_webhook_file
    ports = MonitorPorts(
        prometheus=run.port(MONITOR_HOST_PORTS.prometheus),
        alertmanager=run.port(MONITOR_HOST_PORTS.alertmanager),
        alert_sink=0 if webhook_file else run.port(MONITOR_HOST_PORTS.alert_sink),
        grafana=0,  # the sandbox runs no Grafana: `llmfleet top` and Prometheus' own UI
    )
    _start_alertmanager(run, ports)
    _start_prometheus(run, place, ports, backends)
    return ports


def write_backend_targets(path: Path, backends: Sequence[Member]) -> None:
    """The backends Prometheus scrapes: every member, draining ones too (their drain shows)."""
    write_targets_file(path, [Target(b.address, {"node": b.name, "role": "gpu-node"})
                              for b in backends])


def _start_alertmanager(run: SandboxRun, ports: MonitorPorts) -> None:
    folder = _monitoring_dir(run, "alertmanager-data")
    webhook_file = run.config.alerts.slack_webhook_file
    sink_url = None
    if webhook_file is not None:
        if not webhook_file.expanduser().is_file():
            raise SandboxError(f"alerts.slack_webhook_file {webhook_file} does not exist; "
                               "write the Slack webhook URL into it, or leave the key out")
        run.say(f"alerts go to Slack {run.config.alerts.slack_channel}")
    else:
        sink = f"http://{LOOPBACK}:{ports.alert_sink}"
        sink_url = sink + "/alerts"
        run.wait_healthy([run.launch("alert-sink", "alert-sink", [
            sys.executable, "-m", "llmfleet.local.alert_sink",
            "--host", LOOPBACK, "--port", str(ports.alert_sink),
        ], sink, sink + "/health")])
        run.say(f"alerts go to the local sink, logged in {run.logs / 'alert-sink.log'}")
    url = f"http://{LOOPBACK}:{ports.alertmanager}"
    conf = folder / "alertmanager.yml"
    conf.write_text(render_alertmanager_config(run.config, sink_url=sink_url))
    run.say(f"starting alertmanager on {url}")
    run.wait_healthy([run.launch("alertmanager", "alertmanager", [
        tool_binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={conf}",
        f"--storage.path={folder / 'alertmanager-data'}",
        f"--web.listen-address={LOOPBACK}:{ports.alertmanager}",
        f"--web.external-url={url}",  # links in notifications point here
        "--cluster.listen-address=",  # one instance: no gossip port
        "--log.level=warn",
    ], url, url + "/-/ready")])


def _start_prometheus(run: SandboxRun, place: Placement, ports: MonitorPorts,
                      backends: list[Member]) -> None:
    folder = _monitoring_dir(run, "prometheus-data")
    url = f"http://{LOOPBACK}:{ports.prometheus}"
    alertmanager = f"{LOOPBACK}:{ports.alertmanager}"
    targets = folder / "backend-targets.json"
    write_backend_targets(targets, backends)
    run.state.scrape_targets_file = str(targets)
    run.save()
    jobs = [
        Job("vllm", file_sd=str(targets)),
        Job("edge", static=(Target(f"{LOOPBACK}:{place.ports.edge_exporter}",
                                   {"role": "edge"}),)),
        Job("alertmanager", static=(Target(alertmanager, {"role": "monitor"}),)),
        Job("prometheus", static=(Target(f"{LOOPBACK}:{ports.prometheus}",
                                         {"role": "monitor"}),)),
    ]
    if place.gateway:
        jobs.append(Job("gateway", static=(Target(place.gateway.address, {"role": "edge"}),)))
    rules = folder / "rules.yml"
    rules.write_text(render_rules(run.config))
    conf = folder / "prometheus.yml"
    conf.write_text(render_prometheus_config(run.config, jobs, rule_files=[str(rules)],
                                             alertmanagers=[alertmanager]))
    run.say(f"starting prometheus on {url}")
    run.wait_healthy([run.launch("prometheus", "prometheus", [
        tool_binary("prometheus"),
        f"--config.file={conf}",
        f"--storage.tsdb.path={folder / 'prometheus-data'}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address={LOOPBACK}:{ports.prometheus}",
        "--log.level=warn",
    ], url, url + "/-/ready")])


def _monitoring_dir(run: SandboxRun, data: str) -> Path:
    """The monitoring folder, with `data` (a storage folder) emptied: series and notification
    logs of an earlier sandbox (other ports, other backends) would look alive for minutes and
    skew every fleet-wide number."""
    folder = run.state_dir / "monitoring"
    shutil.rmtree(folder / data, ignore_errors=True)
    folder.mkdir(exist_ok=True)
    return folder
