"""Grafana's provisioning for the AWS monitor host, from this repository's grafana/ folder.

The dashboards are the generated JSON in grafana/dashboards/ (`python -m
llmfleet.local.dashboards`), loaded as they are; the dashboard provider is
grafana/provisioning/dashboards/llmfleet.yaml as it is; the datasource is
grafana/provisioning/datasources/prometheus.yaml with the two values that depend on the host and
the stack filled in: Prometheus' address and the scrape interval (so `$__rate_interval` spans
enough samples). `infra/` calls these on the machine that runs Pulumi, from the checkout; the
edge's bundle does not carry grafana/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmfleet.config import FleetConfig
from llmfleet.observability.promql import duration
from llmfleet.paths import repo_root


def grafana_dir() -> Path:
    return repo_root() / "grafana"


def dashboard_files() -> dict[str, str]:
    """File name → JSON text of every generated dashboard."""
    return {path.name: path.read_text(encoding="utf-8")
            for path in sorted((grafana_dir() / "dashboards").glob("*.json"))}


def dashboard_provider() -> tuple[str, str]:
    """(the folder the provider loads dashboards from, the provider file's text)."""
    text = (grafana_dir() / "provisioning" / "dashboards" / "llmfleet.yaml").read_text(
        encoding="utf-8")
    [provider] = yaml.safe_load(text)["providers"]
    return provider["options"]["path"], text


def datasource_provisioning(config: FleetConfig, prometheus_url: str) -> str:
    """The datasource file, pointed at `prometheus_url`, with the stack's scrape interval."""
    source = grafana_dir() / "provisioning" / "datasources" / "prometheus.yaml"
    document: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    [datasource] = document["datasources"]
    datasource["url"] = prometheus_url
    datasource.setdefault("jsonData", {})["timeInterval"] = duration(
        config.alerts.scrape_interval_s)
    header = ("# Rendered from grafana/provisioning/datasources/prometheus.yaml for "
              f"{config.stack_name}: Prometheus on this host.\n")
    return header + yaml.safe_dump(document, sort_keys=False)
