"""Dashboards as code: the checked-in JSON is current, every panel queries something that is
exported, ratios cannot show NaN, and the issue's panels are all there."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from llmfleet.config import validate
from llmfleet.local import dashboards
from llmfleet.local.dashboards import DASHBOARDS, Dashboard, Panel, Query, problems
from llmfleet.observability.grafana import dashboard_files, datasource_provisioning
from llmfleet.observability.promql import metric_names, unguarded_divisions
from llmfleet.paths import repo_root


def test_the_checked_in_dashboards_are_current_and_sound():
    result = subprocess.run([sys.executable, "-m", "llmfleet.local.dashboards",
                             "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_check_fails_on_stale_missing_and_foreign_json(tmp_path):
    shutil.copytree(dashboards.dashboards_dir(), tmp_path, dirs_exist_ok=True)
    assert problems(tmp_path) == []
    service = tmp_path / "llmfleet-service.json"
    service.write_text(service.read_text().replace("Tokens per second", "Tokens per sec"))
    (tmp_path / "llmfleet-fleet.json").unlink()
    (tmp_path / "hand-made.json").write_text("{}")
    found = problems(tmp_path)
    assert any("llmfleet-service.json is stale" in p for p in found)
    assert any("llmfleet-fleet.json is stale" in p for p in found)
    assert any("hand-made.json is not generated" in p for p in found)


def test_check_fails_on_a_metric_nothing_exports_and_on_a_nan_ratio(monkeypatch, tmp_path):
    bad = Dashboard("bad", "Bad", "", (
        Panel("typo", (Query("rate(vllm:generation_token_total[5m])"),)),
        Panel("nan", (Query("sum(fleet:requests_running:sum) / sum(vllm:num_requests_waiting)"),)),
    ))
    monkeypatch.setattr(dashboards, "DASHBOARDS", (*DASHBOARDS, bad))
    found = problems(dashboards.dashboards_dir())
    assert any("'typo' queries vllm:generation_token_total" in p for p in found), found
    assert any("'nan' divides by sum(vllm:num_requests_waiting)" in p for p in found), found


@pytest.mark.parametrize(("expr", "names"), [
    ('histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket'
     '{model_name="a b"}[$__rate_interval])))', {"vllm:e2e_request_latency_seconds_bucket"}),
    ('fleet:x:y == 0 and on () (count(up{job="vllm"}) > 0 or vector(0))', {"fleet:x:y", "up"}),
    ("a * on (instance_type, lifecycle) group_left b offset 5m", {"a", "b"}),
    ("1 - avg without (cpu) (rate(node_cpu_seconds_total[1m])) * 1e3", {"node_cpu_seconds_total"}),
])
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names


def test_ratios_must_guard_their_denominator():
    assert unguarded_divisions("a / (sum(b) > 0)") == []
    assert unguarded_divisions("a / b") == ["b"]
    assert unguarded_divisions("a / (b + c)") == ["(b + c)"]


def test_the_issues_panels_are_there():
    titles = " | ".join(p.title.lower() for d in DASHBOARDS for p in d.panels)
    for wanted in ("tokens per second", "p50 / p95 / p99", "time to first token",
                   "gpu utilisation", "requests waiting", "requests running", "kv-cache",
                   "4xx / 5xx", "429s by tier", "healthy backends", "spot and on-demand",
                   "cost per hour"):
        assert wanted in titles, wanted


def test_panels_use_the_provisioned_datasource_and_unique_ids():
    datasource = yaml.safe_load((repo_root() / "grafana" / "provisioning" / "datasources"
                                 / "prometheus.yaml").read_text())["datasources"][0]
    for path in dashboards.dashboards_dir().glob("*.json"):
        model = json.loads(path.read_text())
        ids = [panel["id"] for panel in model["panels"]]
        assert len(ids) == len(set(ids))
        for panel in model["panels"]:
            assert panel["datasource"]["uid"] == datasource["uid"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    provider = yaml.safe_load((repo_root() / "grafana" / "provisioning" / "dashboards"
                               / "llmfleet.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_the_fixtures_gateway_names_are_the_ones_the_gateway_exports():
    from prometheus_client import generate_latest

    from llmfleet.gateway.metrics import GatewayMetrics
    from llmfleet.local.simbackend import parse_exposition

    registry = GatewayMetrics().registry
    _, types, _ = parse_exposition(generate_latest(registry).decode())
    listed = yaml.safe_load(dashboards.exporter_metrics_file().read_text())["gateway"]
    assert set(listed) <= set(types)


def test_the_monitor_hosts_datasource_is_the_provisioned_one_pointed_at_its_prometheus():
    config = validate({"alerts": {"scrape_interval_s": 15, "rate_window_s": 60}}, "t")
    [rendered] = yaml.safe_load(
        datasource_provisioning(config, "http://127.0.0.1:1"))["datasources"]
    checked_in = yaml.safe_load((repo_root() / "grafana" / "provisioning" / "datasources"
                                 / "prometheus.yaml").read_text())["datasources"][0]
    assert rendered == {**checked_in, "url": "http://127.0.0.1:1",
                        "jsonData": {**checked_in["jsonData"], "timeInterval": "15s"}}
    assert set(dashboard_files()) == {p.name for p in dashboards.dashboards_dir().glob("*.json")}
