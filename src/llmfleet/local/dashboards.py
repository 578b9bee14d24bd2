"""Grafana dashboards as code: plain Python here, JSON in grafana/dashboards/ (checked in).

    python -m llmfleet.local.dashboards          # write the JSON
    python -m llmfleet.local.dashboards --check  # fail when stale or a panel queries
                                                         # a metric nothing exports

Ratios are written `a / (b > 0)` so an idle panel shows nothing instead of NaN. Panels whose
data only exists on AWS, with a GPU or with the gateway say so in `needs`; the integration test
queries every other panel against a real Prometheus scraping the sandbox under load.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from llmfleet.config import FleetConfig
from llmfleet.observability import edge_exporter
from llmfleet.observability.promql import family, metric_names, unguarded_divisions
from llmfleet.observability.rules import recorded_names
from llmfleet.observability.vllm_metrics import METRIC_NAMES as VLLM_METRIC_NAMES
from llmfleet.paths import repo_root

DATASOURCE = {"type": "prometheus", "uid": "llmfleet-prometheus"}
Needs = Literal["aws", "gpu", "gateway"]
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: Literal["timeseries", "stat"] = "timeseries"
    # What must exist for the panel to have data; None: the sandbox has it.
    needs: Needs | None = None


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"


def _q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


SERVICE = Dashboard(
    "llmfleet-service", "LLMFleet / Service",
    "What clients get: throughput, latency, queueing, errors and rate limiting.",
    (
        Panel("Healthy backends", _q("fleet:healthy_backends:count"), kind="stat",
              description="vLLM nodes whose metrics endpoint answers."),
        Panel("Requests waiting", _q("fleet:requests_waiting:sum", "waiting"), kind="stat",
              description="Requests queued on all nodes; the scaler acts on this."),
        Panel("Tokens per second", (Query("fleet:generation_tokens:rate", "generated"),
                                    Query("fleet:prompt_tokens:rate", "prompt")),
              unit="short", description="Tokens the fleet generates and reads per second."),
        Panel("Requests finished per second", _q("fleet:requests_finished:rate",
                                                 "{{finished_reason}}"),
              unit="reqps", description="stop/length: completed; abort: client left."),
        Panel("End-to-end latency P50 / P95 / P99",
              _q("fleet:e2e_latency_seconds:quantile", "P{{quantile}}"), unit="s",
              description="Request latency at the model servers, over the rules' rate window."),
        Panel("Time to first token P50 / P95 / P99",
              _q("fleet:ttft_seconds:quantile", "P{{quantile}}"), unit="s"),
        Panel("Requests waiting per node", (Query("node:requests_waiting:sum", "{{node}}"),
                                            Query("fleet:requests_waiting:max", "max")),
              description="The alert fires on the busiest node's queue."),
        Panel("Requests running", (Query("sum by (node) (vllm:num_requests_running)",
                                         "{{node}}"),
                                   Query("fleet:requests_running:sum", "fleet")),
              description="Requests in the nodes' running batches."),
        Panel("KV-cache usage", _q("node:kv_cache_usage:max", "{{node}}"), unit="percentunit",
              description="Above 90 % requests get preempted and recomputed."),
        Panel("Error ratio (4xx / 5xx at the edge)",
              _q("fleet:edge_errors:ratio", "{{class}}"), unit="percentunit",
              description="Share of responses the edge sent with 4xx or 5xx (from its access "
                          "log: includes nginx's own 502/504 and the gateway's 401/429)."),
        Panel("Edge responses per second", _q("fleet:edge_responses:rate", "{{class}}"),
              unit="reqps"),
        Panel("Refused busy (every node full)", _q("fleet:edge_busy:ratio", "busy"),
              unit="percentunit",
              description="Share of requests the edge answered 429 busy with Retry-After: every "
                          "node held load_balancing.max_requests_per_node. Alert: "
                          "LLMFleetEdgeBusy."),
        Panel("429s by tier", (
            Query("tier:gateway_throttled:ratio", "{{tier}} ratio"),
        ), unit="percentunit", needs="gateway",
            description="Share of each tier's requests refused with 429."),
        Panel("Gateway decisions per second", _q(
            f"sum by (decision, reason) (rate(llmfleet_gateway_requests_total[{RATE}]))",
            "{{decision}} {{reason}}"), unit="reqps", needs="gateway"),
        Panel("Gateway decision time P99", _q(
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(llmfleet_gateway_decision_seconds_bucket[{RATE}])))", "P99"), unit="s",
              needs="gateway"),
        Panel("Redis reachable from the gateways", _q("min(llmfleet_gateway_redis_up)", "up"),
              kind="stat", needs="gateway"),
    ),
)

FLEET = Dashboard(
    "llmfleet-fleet", "LLMFleet / Fleet and cost",
    "What the fleet is made of: GPUs, nodes, spot versus on-demand, cost, the edge's exporters.",
    (
        Panel("GPU utilisation", (Query("DCGM_FI_DEV_GPU_UTIL", "{{node}} GPU {{gpu}}"),
                                  Query("fleet:gpu_utilisation:avg", "fleet average")),
              unit="percent", needs="gpu", description="DCGM exporter; alert above 95 %."),
        Panel("GPU memory used", _q(
            "DCGM_FI_DEV_FB_USED / ((DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > 0)",
            "{{node}} GPU {{gpu}}"), unit="percentunit", needs="gpu"),
        Panel("GPU nodes: spot and on-demand", _q(
            "sum by (lifecycle) (fleet:gpu_nodes:count)", "{{lifecycle}}"), needs="aws"),
        Panel("Estimated cost per hour", _q("fleet:cost_dollars_per_hour:estimate", "USD/h"),
              unit="currencyUSD", kind="stat", needs="aws",
              description="GPU nodes × list price (spot estimated as a share of on-demand)."),
        Panel("Node CPU busy", _q(
            f'1 - avg by (node) (rate(node_cpu_seconds_total{{mode="idle"}}[{RATE}]))',
            "{{node}}"), unit="percentunit", needs="aws"),
        Panel("Node memory available", _q(
            "node_memory_MemAvailable_bytes / (node_memory_MemTotal_bytes > 0)", "{{node}}"),
              unit="percentunit", needs="aws"),
        Panel("Edge connections (nginx)", _q("nginx_connections_active", "active"),
              needs="aws", description="nginx exporter reading stub_status on the edge."),
        Panel("Redis clients", _q("redis_connected_clients", "clients"), needs="aws"),
        Panel("Scrape targets up", _q("sum by (job) (up)", "{{job}}"),
              description="Targets Prometheus reaches, by job."),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (SERVICE, FLEET)


def dashboards_dir() -> Path:
    return repo_root() / "grafana" / "dashboards"


def exporter_metrics_file() -> Path:
    return repo_root() / "grafana" / "exporter-metrics.yaml"


def build(dashboard: Dashboard) -> dict[str, Any]:
    """Grafana's JSON model for one dashboard."""
    panels, x, y, row_height = [], 0, 0, 0
    for number, panel in enumerate(dashboard.panels, start=1):
        width, height = (6, 4) if panel.kind == "stat" else (12, 8)
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel(panel, number, {"h": height, "w": width, "x": x, "y": y}))
        x, row_height = x + width, max(row_height, height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["llmfleet"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": []},
        "panels": panels,
    }


def _panel(panel: Panel, number: int, grid: dict[str, int]) -> dict[str, Any]:
    description = panel.description
    if panel.needs:
        description = f"{description} (Needs: {panel.needs}.)".strip()
    return {
        "id": number,
        "type": panel.kind,
        "title": panel.title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if panel.kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr,
             "legendFormat": q.legend}
            for i, q in enumerate(panel.queries)
        ],
    }


def render_all() -> dict[str, str]:
    """File name → JSON text for every dashboard."""
    return {d.filename: json.dumps(build(d), indent=2) + "\n" for d in DASHBOARDS}


def exported_names() -> set[str]:
    """Every metric family a panel may query: vLLM's, the edge exporter's, the exporters' in
    the fixture file, and the recording rules'."""
    fixture = yaml.safe_load(exporter_metrics_file().read_text())
    names = {name for group in fixture.values() for name in group}
    return (names | set(VLLM_METRIC_NAMES) | set(edge_exporter.METRIC_NAMES)
            | recorded_names(FleetConfig()))


def problems(directory: Path | None = None) -> list[str]:
    """Why the checked-in dashboards are wrong; empty when they are current and sound."""
    directory = directory or dashboards_dir()
    found = []
    known = exported_names()
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for query in panel.queries:
                unknown = sorted(n for n in metric_names(query.expr)
                                 if n not in known and family(n) not in known)
                if unknown:
                    found.append(f"{dashboard.uid}: panel {panel.title!r} queries "
                                 f"{', '.join(unknown)}, which nothing exports")
                for denominator in unguarded_divisions(query.expr):
                    found.append(f"{dashboard.uid}: panel {panel.title!r} divides by "
                                 f"{denominator}; write it (b > 0) so idle shows no NaN")
    expected = render_all()
    for name, text in expected.items():
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            found.append(f"{path} is stale; run python -m llmfleet.local.dashboards")
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            found.append(f"{path} is not generated by llmfleet.local.dashboards")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.local.dashboards",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="fail when the JSON is stale or a panel queries an unknown metric")
    parser.add_argument("--out", type=Path, default=None,
                        help="dashboards folder (default: grafana/dashboards in the checkout)")
    args = parser.parse_args(argv)
    directory = args.out or dashboards_dir()
    if args.check:
        found = problems(directory)
        for problem in found:
            print(problem, file=sys.stderr)
        return 1 if found else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (directory / name).write_text(text)
        print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
