"""Prometheus and Alertmanager configs rendered from their templates, checked by the real
promtool and amtool; secrets are referenced by file and never rendered."""

from pathlib import Path

import pytest
import yaml

from llmfleet.config import FleetConfig, validate
from llmfleet.observability.alertmanager import (
    check_alertmanager_config,
    render_alertmanager_config,
)
from llmfleet.observability.prometheus import (
    Job,
    Target,
    aws_prometheus_config,
    promtool,
    render_prometheus_config,
)
from llmfleet.observability.rules import render_rules

HOOK = "https://hooks.slack.com/services/T000/B000/secret-part"


def checked_prometheus(tmp_path: Path, text: str) -> dict:
    (tmp_path / "rules.yml").write_text(render_rules(FleetConfig()))
    conf = tmp_path / "prometheus.yml"
    conf.write_text(text)
    check = promtool("check", "config", conf)
    assert check.ok, check.output
    return yaml.safe_load(text)


def test_aws_config_discovers_the_stacks_instances_by_tag_and_role(tmp_path):
    rendered = checked_prometheus(tmp_path, aws_prometheus_config(
        FleetConfig(), region="eu-west-1", stack="acme-prod",
        rules_file=str(tmp_path / "rules.yml")))
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    ports = {name: job["ec2_sd_configs"][0]["port"] for name, job in jobs.items()
             if "ec2_sd_configs" in job}
    assert ports == {"vllm": 8000, "dcgm": 9400, "node": 9100, "edge": 9180, "gateway": 8090,
                     "nginx": 9113, "redis": 9121}
    for name in ports:
        sd = jobs[name]["ec2_sd_configs"][0]
        filters = {f["name"]: f["values"] for f in sd["filters"]}
        assert sd["region"] == "eu-west-1"
        assert filters["tag:llmfleet:stack"] == ["acme-prod"]
        assert filters["instance-state-name"] == ["running"]
        targets = {r.get("target_label") for r in jobs[name]["relabel_configs"]}
        assert {"node", "instance_type", "lifecycle", "role"} <= targets
    assert jobs["vllm"]["ec2_sd_configs"][0]["filters"][1]["values"] == ["gpu-node"]
    assert jobs["nginx"]["ec2_sd_configs"][0]["filters"][1]["values"] == ["edge"]
    assert jobs["alertmanager"]["static_configs"][0]["targets"] == ["localhost:9093"]
    assert rendered["global"]["external_labels"] == {"stack": "acme-prod"}
    # Every job labels its series with the stack, which the dashboards and rules filter by.
    for job in jobs.values():
        assert {"target_label": "stack", "replacement": "acme-prod"} in job["relabel_configs"]


def test_static_config_takes_intervals_from_the_alerts_section(tmp_path):
    config = validate({"alerts": {"scrape_interval_s": 15, "evaluation_interval_s": 10}}, "t")
    jobs = [Job("vllm", static=(Target("127.0.0.1:8001", {"node": "backend-1"}),))]
    rendered = checked_prometheus(tmp_path, render_prometheus_config(
        config, jobs, rule_files=[str(tmp_path / "rules.yml")], alertmanagers=["127.0.0.1:9"]))
    assert rendered["global"]["scrape_interval"] == "15s"
    assert rendered["global"]["scrape_timeout"] == "10s"
    assert rendered["global"]["evaluation_interval"] == "10s"
    assert rendered["scrape_configs"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:8001"], "labels": {"node": "backend-1"}}]
    assert rendered["scrape_configs"][0]["relabel_configs"] == [
        {"target_label": "stack", "replacement": config.stack_name}]


def test_discovered_jobs_need_ec2_settings():
    with pytest.raises(ValueError, match="EC2"):
        render_prometheus_config(FleetConfig(), [Job("vllm", port=8000, roles=("gpu",))],
                                 rule_files=[], alertmanagers=[])


def alertmanager(tmp_path: Path, data: dict, **kwargs) -> dict:
    text = render_alertmanager_config(validate(data, "t"), **kwargs)
    assert HOOK not in text and "routing-key-secret" not in text
    conf = tmp_path / "alertmanager.yml"
    conf.write_text(text)
    check = check_alertmanager_config(conf)
    assert check.ok, check.output
    return yaml.safe_load(text)


def test_slack_reads_its_webhook_from_the_file_and_sends_resolved(tmp_path):
    hook = tmp_path / "slack-webhook"
    hook.write_text(HOOK)
    rendered = alertmanager(tmp_path, {"alerts": {"slack_webhook_file": str(hook),
                                                  "slack_channel": "#ops",
                                                  "group_wait_s": 1, "group_interval_s": 90}})
    assert rendered["route"]["receiver"] == "slack"
    assert (rendered["route"]["group_wait"], rendered["route"]["group_interval"]) == ("1s",
                                                                                      "1m30s")
    [receiver] = rendered["receivers"]
    [slack] = receiver["slack_configs"]
    assert slack["api_url_file"] == str(hook) and "api_url" not in slack
    assert slack["channel"] == "#ops" and slack["send_resolved"] is True
    for field in ("title", "text", "color"):
        assert "llmfleet." in slack[field]
    assert Path(rendered["templates"][0]).is_file()


def test_no_healthy_backends_silences_the_latency_alert(tmp_path):
    rendered = alertmanager(tmp_path, {})
    inhibitions = [(r["source_matchers"], r["target_matchers"])
                   for r in rendered["inhibit_rules"]]
    assert (['alertname="LLMFleetNoHealthyBackends"'],
            ['alertname="LLMFleetHighP99Latency"']) in inhibitions


def test_without_slack_alerts_go_to_the_local_sink_or_nowhere(tmp_path):
    sink = alertmanager(tmp_path, {}, sink_url="http://127.0.0.1:9095/alerts")
    assert sink["route"]["receiver"] == "local-sink"
    assert sink["receivers"][0]["webhook_configs"][0]["url"] == "http://127.0.0.1:9095/alerts"
    nowhere = alertmanager(tmp_path, {})
    assert nowhere["route"]["receiver"] == "none"
    assert [r["name"] for r in nowhere["receivers"]] == ["none"]


def test_pagerduty_pages_critical_alerts_and_slack_still_gets_them(tmp_path):
    key = tmp_path / "pd-key"
    key.write_text("routing-key-secret")
    hook = tmp_path / "slack-webhook"
    hook.write_text(HOOK)
    rendered = alertmanager(tmp_path, {"alerts": {"slack_webhook_file": str(hook),
                                                  "pagerduty_routing_key_file": str(key)}})
    page, rest = rendered["route"]["routes"]
    assert page == {"receiver": "pagerduty", "matchers": ['severity="critical"'],
                    "continue": True}
    assert rest == {"receiver": "slack"}
    [pagerduty] = [r for r in rendered["receivers"] if r["name"] == "pagerduty"]
    assert pagerduty["pagerduty_configs"][0]["routing_key_file"] == str(key)
    assert "routes" not in alertmanager(tmp_path, {})["route"]
