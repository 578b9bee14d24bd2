"""Monitoring in the sandbox: Prometheus and Alertmanager on loopback, with the same rules and
templates as the AWS monitor instance.

Prometheus scrapes the backends, the edge (through the access-log exporter), the gateway when
one runs, Alertmanager and itself. Alertmanager sends to Slack when `alerts.slack_webhook_file`
is set; otherwise to the local alert sink, whose log shows every alert.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from llmfleet.edge.nginx import NginxPaths
from llmfleet.local.sandbox.ports import LOOPBACK
from llmfleet.local.sandbox.run import SandboxError, SandboxRun
from llmfleet.observability.alertmanager import render_alertmanager_config
from llmfleet.observability.prometheus import Job, Target, render_prometheus_config, tool_binary
from llmfleet.observability.rules import render_rules

# Preferred ports (the usual ones for each tool); taken ones move to free ports.
PROMETHEUS_PORT, ALERTMANAGER_PORT, ALERT_SINK_PORT, EDGE_EXPORTER_PORT = 9090, 9093, 9095, 9180


def start_alertmanager(run: SandboxRun) -> None:
    """Alertmanager, and the alert sink it posts to when there is no Slack webhook."""
    if not run.config.sandbox.monitoring:
        return
    folder = _monitoring_dir(run, "alertmanager-data")
    webhook_file = run.config.alerts.slack_webhook_file
    sink_url = None
    if webhook_file is not None:
        if not webhook_file.expanduser().is_file():
            raise SandboxError(f"alerts.slack_webhook_file {webhook_file} does not exist; "
                               "write the Slack webhook URL into it, or leave the key out")
        run.say(f"alerts go to Slack {run.config.alerts.slack_channel}")
    else:
        sink_port = run.port(ALERT_SINK_PORT)
        sink = f"http://{LOOPBACK}:{sink_port}"
        sink_url = sink + "/alerts"
        run.launch("alert-sink", "alert_sink", [
            sys.executable, "-m", "llmfleet.local.alert_sink",
            "--host", LOOPBACK, "--port", str(sink_port),
        ], sink, sink + "/health")
        run.say(f"alerts go to the local sink, logged in {run.logs / 'alert-sink.log'}")
    port = run.port(ALERTMANAGER_PORT)
    url = f"http://{LOOPBACK}:{port}"
    conf = folder / "alertmanager.yml"
    conf.write_text(render_alertmanager_config(run.config, sink_url=sink_url))
    run.say(f"starting alertmanager on {url}")
    run.launch("alertmanager", "alertmanager", [
        tool_binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={conf}",
        f"--storage.path={folder / 'alertmanager-data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        f"--web.external-url={url}",  # links in notifications point here
        "--cluster.listen-address=",  # one instance: no gossip port
        "--log.level=warn",
    ], url, url + "/-/ready")
    run.facts["alertmanager"] = {"address": f"{LOOPBACK}:{port}", "url": url}


def start_prometheus(run: SandboxRun) -> None:
    """The edge's access-log exporter and Prometheus, with the fleet's rules."""
    if not run.config.sandbox.monitoring:
        return
    folder = _monitoring_dir(run, "prometheus-data")
    exporter_port = run.port(EDGE_EXPORTER_PORT)
    exporter = f"http://{LOOPBACK}:{exporter_port}"
    run.launch("edge-exporter", "edge_exporter", [
        sys.executable, "-m", "llmfleet.observability.edge_exporter",
        "--access-log", NginxPaths.under(run.state_dir / "nginx").access_log,
        "--host", LOOPBACK, "--port", str(exporter_port),
    ], exporter + "/metrics", exporter + "/health")

    port = run.port(PROMETHEUS_PORT)
    url = f"http://{LOOPBACK}:{port}"
    alertmanager = run.facts["alertmanager"]["address"]
    jobs = [
        Job("vllm", static=tuple(
            Target(f"{u['host']}:{u['port']}", {"node": u["name"], "role": "gpu-node"})
            for u in run.facts["upstreams"])),
        Job("edge", static=(Target(f"{LOOPBACK}:{exporter_port}", {"role": "edge"}),)),
        Job("alertmanager", static=(Target(alertmanager, {"role": "monitor"}),)),
        Job("prometheus", static=(Target(f"{LOOPBACK}:{port}", {"role": "monitor"}),)),
    ]
    gateway = run.facts.get("gateway")
    if gateway:
        jobs.append(Job("gateway", static=(Target(gateway["address"], {"role": "edge"}),)))
    rules = folder / "rules.yml"
    rules.write_text(render_rules(run.config))
    conf = folder / "prometheus.yml"
    conf.write_text(render_prometheus_config(run.config, jobs, rule_files=[str(rules)],
                                             alertmanagers=[alertmanager]))
    run.say(f"starting prometheus on {url}")
    run.launch("prometheus", "prometheus", [
        tool_binary("prometheus"),
        f"--config.file={conf}",
        f"--storage.tsdb.path={folder / 'prometheus-data'}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--log.level=warn",
    ], url, url + "/-/ready")
    run.facts["prometheus"] = {"url": url}


def _monitoring_dir(run: SandboxRun, data: str) -> Path:
    """The monitoring folder, with `data` (a storage folder) emptied: series and notification
    logs of an earlier sandbox (other ports, other backends) would look alive for minutes and
    skew every fleet-wide number."""
    folder = run.state_dir / "monitoring"
    shutil.rmtree(folder / data, ignore_errors=True)
    folder.mkdir(exist_ok=True)
    return folder
