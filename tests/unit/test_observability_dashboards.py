"""Dashboards as code: the checked-in JSON is current and is what Grafana's own SDK types read
back, every panel queries something that is exported and filters by the dashboard's variables,
ratios cannot show NaN, and the issue's panels are all there."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from llmfleet.config import validate
from llmfleet.local import dashboards
from llmfleet.local.dashboards import (
    DASHBOARDS,
    Dashboard,
    Panel,
    Query,
    Row,
    for_prometheus,
    problems,
    unfiltered_selectors,
)
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
    bad = Dashboard("bad", "Bad", "", (Row("r", (
        Panel("typo", (Query("rate(vllm:generation_token_total[5m])"),)),
        Panel("nan", (Query("sum(fleet:requests_running:sum) / sum(vllm:num_requests_waiting)"),)),
        Panel("unfiltered", (Query('sum(vllm:num_requests_waiting{stack=~"$stack"})'),)),
    )),))
    monkeypatch.setattr(dashboards, "DASHBOARDS", (*DASHBOARDS, bad))
    found = problems(dashboards.dashboards_dir())
    assert any("'typo' queries vllm:generation_token_total" in p for p in found), found
    assert any("'nan' divides by sum(vllm:num_requests_waiting)" in p for p in found), found
    assert any("'unfiltered' reads vllm:num_requests_waiting (without "
               'model_name=~"$model", node=~"$node")' in p for p in found), found


@pytest.mark.parametrize(("expr", "names"), [
    ('histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket'
     '{model_name="a b"}[$__rate_interval])))', {"vllm:e2e_request_latency_seconds_bucket"}),
    ('fleet:x:y == 0 and on () (count(up{job="vllm"}) > 0 or vector(0))', {"fleet:x:y", "up"}),
    ("a * on (instance_type, lifecycle) group_left b offset 5m", {"a", "b"}),
    ("1 - avg without (cpu) (rate(node_cpu_seconds_total[1m])) * 1e3", {"node_cpu_seconds_total"}),
])
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names


@pytest.mark.parametrize(("expr", "missing"), [
    ('sum(fleet:generation_tokens:rate{stack=~"$stack"})', []),
    ("sum(fleet:generation_tokens:rate)",
     ['fleet:generation_tokens:rate (without stack=~"$stack")']),
    ('node:kv_cache_usage:max{stack=~"$stack"}',
     ['node:kv_cache_usage:max (without node=~"$node")']),
    ('DCGM_FI_DEV_GPU_TEMP{stack=~"$stack", node=~"$node"} / (up{stack=~"$stack"} > 0)',
     ['up (without node=~"$node")']),
    ('rate(llmfleet_gateway_requests_total{stack=~"$stack", tier="a"}[5m])', []),
])
def test_every_selector_must_carry_the_variables_its_series_have(expr, missing):
    assert unfiltered_selectors(expr) == missing


def test_queries_reach_prometheus_with_the_variables_filled_in():
    expr = ('rate(vllm:x{stack=~"$stack", model_name=~"$model", node=~"$node"}'
            "[$__rate_interval])")
    assert for_prometheus(expr, "10s", stack="demo") == (
        'rate(vllm:x{stack=~"demo", model_name=~".*", node=~".*"}[10s])')


def test_ratios_must_guard_their_denominator():
    assert unguarded_divisions("a / (sum(b) > 0)") == []
    assert unguarded_divisions("a / b") == ["b"]
    assert unguarded_divisions("a / (b + c)") == ["(b + c)"]


def test_the_issues_panels_are_there():
    titles = " | ".join(p.title.lower() for d in DASHBOARDS for p in d.panels)
    for wanted in ("tokens per second", "p50 / p95 / p99", "time to first token",
                   "gpu utilisation", "requests waiting", "requests running", "kv-cache",
                   "4xx / 5xx", "429s by tier", "healthy backends", "spot and on-demand",
                   "cost per hour", "inter-token latency p50 / p95 / p99",
                   "time per output token p50 / p95 / p99", "queue, prefill and decode time",
                   "prompt length", "generation length", "preemptions", "prefix-cache hit rate",
                   "p95 per node", "gpu power", "gpu temperature"):
        assert wanted in titles, wanted
    rows = {d.uid: [row.title for row in d.rows] for d in DASHBOARDS}
    assert rows == {"llmfleet-service": ["Traffic", "Latency", "Engine", "Edge and gateway"],
                    "llmfleet-fleet": ["GPUs", "Hosts", "Cost"]}


def models() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text())
            for path in sorted(dashboards.dashboards_dir().glob("*.json"))}


def test_grafanas_sdk_types_read_every_dashboard_back_unchanged():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.cog.runtime import panelcfg_config
    from grafana_foundation_sdk.models.dashboard import Dashboard as SdkDashboard
    from grafana_foundation_sdk.models.prometheus import Dataquery

    def without_empty_custom(value):
        # The decoder gives a heatmap's field config an empty `custom`; nothing else differs.
        if isinstance(value, dict):
            return {k: without_empty_custom(v) for k, v in value.items()
                    if not (k == "custom" and v == {})}
        if isinstance(value, list):
            return [without_empty_custom(v) for v in value]
        return value

    register_default_plugins()
    for name, data in models().items():
        decoded = SdkDashboard.from_json(data)
        # A key the SDK's types do not know would be dropped, and the JSON would differ.
        again = json.loads(json.dumps(decoded, cls=JSONEncoder))
        assert without_empty_custom(again) == without_empty_custom(data), name
        for panel in decoded.panels:
            if panel.type_val == "row":
                continue
            assert panelcfg_config(panel.type_val) is not None, (name, panel.type_val)
            assert all(isinstance(t, Dataquery) for t in panel.targets), (name, panel.title)
    broken = models()["llmfleet-service.json"]
    broken["panels"][1]["fieldConfig"]["defaults"]["noValu"] = "typo"
    again = json.loads(json.dumps(SdkDashboard.from_json(broken), cls=JSONEncoder))
    assert again != broken


def test_panels_pick_the_prometheus_by_variable_and_filter_by_stack_model_and_node():
    for name, model in models().items():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert list(variables) == ["datasource", "stack", "model", "node"], name
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for label in ("stack", "model", "node"):
            assert variables[label]["includeAll"] and variables[label]["allValue"] == ".*"
        panels = [p for p in model["panels"] if p["type"] != "row"]
        ids = [panel["id"] for panel in model["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                assert '"$stack"' in target["expr"], (name, panel["title"])
        assert "llmfleet-prometheus" not in json.dumps(model)


def test_stats_have_thresholds_and_token_rates_are_in_tok_per_s():
    for name, model in models().items():
        for panel in model["panels"]:
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            if panel["type"] == "stat":
                assert len(defaults["thresholds"]["steps"]) >= 2, (name, panel["title"])
                assert {"type": "special", "options": {"match": "nan", "result": {
                    "text": "no traffic"}}} in defaults["mappings"]
            if "tokens" in panel.get("title", "").lower() and "per second" in panel["title"]:
                assert defaults["unit"] == "suffix: tok/s", panel["title"]
    service = models()["llmfleet-service.json"]
    no_value = {p["title"]: p["fieldConfig"]["defaults"].get("noValue")
                for p in service["panels"] if p["type"] != "row"}
    assert no_value["Healthy backends"] == "rules not loaded"
    assert no_value["Inter-token latency P50 / P95 / P99"] == "no traffic"


def test_each_dashboard_links_to_the_others_keeping_time_and_variables():
    for name, model in models().items():
        others = {f"/d/{d.uid}" for d in DASHBOARDS if d.filename != name}
        assert {link["url"] for link in model["links"]} == others
        assert all(link["keepTime"] and link["includeVars"] for link in model["links"])
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
