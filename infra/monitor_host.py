"""What runs on the monitor host, as data: its files, its secrets, its systemd units and their
command lines, built from the stack's config. `cloud_init.render_monitor` puts the units into
images/monitor/cloud-init.yaml.j2; the config files (larger together than EC2 allows user data
to be) travel as one object in S3 (`config_bundle`). Tests check them without Pulumi (the real
promtool, amtool and systemd-analyze on exactly these files).

Ubuntu's packages run Prometheus (`prometheus.service`) and Alertmanager
(`prometheus-alertmanager.service`), Grafana's own package `grafana-server.service`; drop-ins
give each its command line or settings, everything on loopback, and order them after the two
units of ours: the data volume's mount and the secrets' fetch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from systemd_units import UNIT_DIR, UnitFile, exec_line

from llmfleet.config import FleetConfig
from llmfleet.observability.alertmanager import aws_alertmanager_config, notification_template
from llmfleet.observability.grafana import (
    dashboard_files,
    dashboard_provider,
    datasource_provisioning,
)
from llmfleet.observability.prometheus import aws_prometheus_config
from llmfleet.observability.rules import render_rules
from llmfleet.services import LOOPBACK, MONITOR_HOST_PORTS

CONFIG_DIR = "/etc/llmfleet/monitor"
SECRETS_DIR = "/etc/llmfleet/secrets"  # root-only; services get private copies (LoadCredential)
DATA_DIR = "/var/lib/prometheus"  # the data volume's mount point, Debian's home of both
PROMETHEUS_FILE = f"{CONFIG_DIR}/prometheus.yml"
RULES_FILE = f"{CONFIG_DIR}/rules.yml"
ALERTMANAGER_FILE = f"{CONFIG_DIR}/alertmanager.yml"
TEMPLATE_FILE = f"{CONFIG_DIR}/llmfleet.tmpl"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"

VOLUME_UNIT = "llmfleet-monitor-volume.service"
SECRETS_UNIT = "llmfleet-monitor-secrets.service"
PROMETHEUS_UNIT = "prometheus.service"
ALERTMANAGER_UNIT = "prometheus-alertmanager.service"
GRAFANA_UNIT = "grafana-server.service"
VOLUME_SCRIPT = "/usr/local/sbin/llmfleet-monitor-volume"
INSTALL_SCRIPT = "/usr/local/sbin/llmfleet-monitor-install"
BOOT_SCRIPT = "/usr/local/lib/llmfleet/monitor_boot.py"  # `configs` and `secrets`
# The object in the monitor's bucket that holds every config file (`config_bundle`).
CONFIG_KEY = "monitor-config.json"
# The device name the volume is attached as; Nitro instances show it as an NVMe disk whose
# serial is the volume id instead, which is what the volume script looks for first.
DATA_DEVICE = "/dev/sdf"

# Grafana Labs' APT signing key (https://apt.grafana.com/gpg.key, rotated in 2023). The boot
# refuses a key with another fingerprint: a rotation is for a person to check.
GRAFANA_KEY_FINGERPRINT = "B53AE77BADB630A683046005963FA27710458545"
# The Grafana release series the dashboards are built for (grafana-foundation-sdk's
# "<build>!<Grafana version>" in pyproject.toml): the host installs its newest patch, never
# the next series that the repository's "stable" channel would bring.
GRAFANA_SERIES = "11.6"
# Prometheus keeps at most this share of its volume (`--storage.tsdb.retention.size`), whatever
# `monitor.retention_days` says, so a busy fleet cannot fill the disk and stop it.
RETENTION_SHARE_OF_VOLUME = 0.85


@dataclass(frozen=True)
class Secret:
    """One secret on the monitor host: the SSM parameter it comes from, the root-only file it
    is kept in, and the unit that gets a private copy of it."""

    name: str
    parameter: str
    unit: str

    @property
    def source(self) -> str:
        return f"{SECRETS_DIR}/{self.name}"

    @property
    def for_service(self) -> str:
        """Where the service reads it: systemd's credentials directory of its unit."""
        return f"/run/credentials/{self.unit}/{self.name}"


def secrets(config: FleetConfig, grafana_password_parameter: str) -> list[Secret]:
    """The configured destinations' secrets, and Grafana's admin password."""
    monitor = config.monitor
    found = []
    if monitor.slack_webhook_parameter:
        found.append(Secret("slack-webhook", monitor.slack_webhook_parameter, ALERTMANAGER_UNIT))
    if monitor.pagerduty_routing_key_parameter:
        found.append(Secret("pagerduty-routing-key", monitor.pagerduty_routing_key_parameter,
                            ALERTMANAGER_UNIT))
    found.append(Secret("grafana-admin-password", grafana_password_parameter, GRAFANA_UNIT))
    return found


def prometheus_argv(config: FleetConfig) -> list[str]:
    monitor, port = config.monitor, MONITOR_HOST_PORTS.prometheus
    keep_gib = max(1, int(monitor.data_volume_gib * RETENTION_SHARE_OF_VOLUME))
    return ["/usr/bin/prometheus", f"--config.file={PROMETHEUS_FILE}",
            f"--storage.tsdb.path={DATA_DIR}/metrics2",
            f"--storage.tsdb.retention.time={monitor.retention_days}d",
            # Prometheus' GB are GiB.
            f"--storage.tsdb.retention.size={keep_gib}GB",
            f"--web.listen-address={LOOPBACK}:{port}",
            # Links in alerts and the UI, as seen through the SSM port forward.
            f"--web.external-url=http://localhost:{port}/"]


def alertmanager_argv() -> list[str]:
    port = MONITOR_HOST_PORTS.alertmanager
    return ["/usr/bin/prometheus-alertmanager", f"--config.file={ALERTMANAGER_FILE}",
            f"--storage.path={DATA_DIR}/alertmanager",
            f"--web.listen-address={LOOPBACK}:{port}",
            f"--web.external-url=http://localhost:{port}/",
            # One Alertmanager: no cluster port (it would listen on every address).
            "--cluster.listen-address="]


def grafana_environment() -> list[str]:
    """Grafana's settings as GF_<SECTION>_<KEY> variables, which win over grafana.ini."""
    port = MONITOR_HOST_PORTS.grafana
    return [
        f"GF_SERVER_HTTP_ADDR={LOOPBACK}",
        f"GF_SERVER_HTTP_PORT={port}",
        f"GF_SERVER_ROOT_URL=http://localhost:{port}/",
        # Read from the file when Grafana starts; set for the admin at its first start.
        "GF_SECURITY_ADMIN_PASSWORD=$__file{%d/grafana-admin-password}",
        "GF_USERS_ALLOW_SIGN_UP=false",
        "GF_AUTH_ANONYMOUS_ENABLED=false",
        "GF_ANALYTICS_REPORTING_ENABLED=false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES=false",
    ]


def unit_files(config: FleetConfig, region: str, grafana_password_parameter: str
               ) -> list[UnitFile]:
    """Our two units, and a drop-in for each packaged one."""
    held = secrets(config, grafana_password_parameter)

    def credentials(unit: str) -> list[str]:
        return [f"LoadCredential={s.name}:{s.source}" for s in held if s.unit == unit]

    fetch = ["/usr/bin/python3", BOOT_SCRIPT, "secrets", region, SECRETS_DIR,
             *(f"{s.name}={s.parameter}" for s in held)]
    # RequiresMountsFor: stopped before the volume is unmounted at shutdown.
    on_volume = [f"Requires={VOLUME_UNIT}", f"After={VOLUME_UNIT}",
                 f"RequiresMountsFor={DATA_DIR}"]
    # Wants: a failed fetch leaves the files of the boot before, if any; a secret never fetched
    # fails the service's start (its credential is missing), which is what should happen.
    with_secrets = [f"Wants={SECRETS_UNIT}", f"After={SECRETS_UNIT}"]
    return [
        UnitFile(f"{UNIT_DIR}/{VOLUME_UNIT}", _lines(
            "[Unit]", f"Description=llmfleet: Prometheus' own EBS volume at {DATA_DIR}",
            f"Before={PROMETHEUS_UNIT} {ALERTMANAGER_UNIT}", "",
            "[Service]", "Type=oneshot", "RemainAfterExit=yes", f"ExecStart={VOLUME_SCRIPT}",
            # The volume is attached only once the instance runs.
            "TimeoutStartSec=20min", "",
            "[Install]", "WantedBy=multi-user.target")),
        UnitFile(f"{UNIT_DIR}/{SECRETS_UNIT}", _lines(
            "[Unit]", "Description=llmfleet: the monitor's secrets from SSM Parameter Store",
            "Wants=network-online.target", "After=network-online.target", "",
            # No RemainAfterExit: every start of a service that wants it fetches them again.
            "[Service]", "Type=oneshot", f"ExecStart={exec_line(fetch)}", "UMask=0077")),
        UnitFile(f"{UNIT_DIR}/{PROMETHEUS_UNIT}.d/llmfleet.conf", _lines(
            "[Unit]", *on_volume, "",
            "[Service]", "ExecStart=", f"ExecStart={exec_line(prometheus_argv(config))}")),
        UnitFile(f"{UNIT_DIR}/{ALERTMANAGER_UNIT}.d/llmfleet.conf", _lines(
            "[Unit]", *on_volume, *with_secrets, "",
            "[Service]", *credentials(ALERTMANAGER_UNIT), "ExecStart=",
            f"ExecStart={exec_line(alertmanager_argv())}")),
        UnitFile(f"{UNIT_DIR}/{GRAFANA_UNIT}.d/llmfleet.conf", _lines(
            "[Unit]", *with_secrets, "",
            "[Service]", *credentials(GRAFANA_UNIT),
            *(f"Environment={exec_line([pair])}" for pair in grafana_environment()))),
    ]


def config_files(config: FleetConfig, *, stack: str, region: str,
                 grafana_password_parameter: str) -> dict[str, str]:
    """Path → text of every config file the monitor's services read."""
    held = {s.name: s for s in secrets(config, grafana_password_parameter)}
    slack, pagerduty = held.get("slack-webhook"), held.get("pagerduty-routing-key")
    dashboards_path, provider = dashboard_provider()
    files = {
        PROMETHEUS_FILE: aws_prometheus_config(config, region=region, stack=stack,
                                               rules_file=RULES_FILE),
        RULES_FILE: render_rules(config),
        ALERTMANAGER_FILE: aws_alertmanager_config(
            config, slack_webhook_file=slack.for_service if slack else None,
            pagerduty_routing_key_file=pagerduty.for_service if pagerduty else None,
            template_file=TEMPLATE_FILE),
        TEMPLATE_FILE: notification_template().read_text(encoding="utf-8"),
        f"{GRAFANA_PROVISIONING}/datasources/llmfleet.yaml": datasource_provisioning(
            config, f"http://{LOOPBACK}:{MONITOR_HOST_PORTS.prometheus}"),
        f"{GRAFANA_PROVISIONING}/dashboards/llmfleet.yaml": provider,
    }
    files.update({f"{dashboards_path}/{name}": text for name, text in dashboard_files().items()})
    return files


def config_bundle(config: FleetConfig, *, stack: str, region: str,
                  grafana_password_parameter: str) -> str:
    """`config_files` as the one JSON object the instance fetches from S3; the same config
    gives the same text, so its SHA-256 changes exactly when a file does."""
    return json.dumps(config_files(config, stack=stack, region=region,
                                   grafana_password_parameter=grafana_password_parameter),
                      sort_keys=True, indent=1)


def fetch_configs_command(region: str, bucket: str, sha256: str) -> list[str]:
    return ["/usr/bin/python3", BOOT_SCRIPT, "configs", region, bucket, CONFIG_KEY, sha256]


def start_commands() -> list[list[str]]:
    """runcmd lines after the install script: the packaged units with their drop-ins, in the
    order each needs the one before (Prometheus sends to Alertmanager; Grafana reads
    Prometheus)."""
    units = [ALERTMANAGER_UNIT, PROMETHEUS_UNIT, GRAFANA_UNIT]
    return [["systemctl", "daemon-reload"], ["systemctl", "enable", *units],
            *(["systemctl", "restart", unit] for unit in units)]


def _lines(*lines: str) -> str:
    return "\n".join(lines) + "\n"
