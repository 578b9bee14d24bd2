"""Backends that come and go are scraped through file-based discovery: the job names a targets
file, and the file holds each target with its labels, as promtool checks both."""

import json

import yaml

from llmfleet.config import FleetConfig
from llmfleet.observability.prometheus import (
    Job,
    Target,
    promtool,
    render_prometheus_config,
    write_targets_file,
)
from llmfleet.observability.rules import render_rules


def test_a_job_with_a_targets_file_discovers_what_the_file_lists(tmp_path):
    targets = tmp_path / "backend-targets.json"
    write_targets_file(targets, [Target("127.0.0.1:8001", {"node": "backend-1"}),
                                 Target("127.0.0.1:8002", {"node": "backend-2"})])
    assert json.loads(targets.read_text()) == [
        {"targets": ["127.0.0.1:8001"], "labels": {"node": "backend-1"}},
        {"targets": ["127.0.0.1:8002"], "labels": {"node": "backend-2"}},
    ]
    (tmp_path / "rules.yml").write_text(render_rules(FleetConfig()))
    text = render_prometheus_config(
        FleetConfig(), [Job("vllm", file_sd=str(targets)),
                        Job("edge", static=(Target("127.0.0.1:9", {"role": "edge"}),))],
        rule_files=[str(tmp_path / "rules.yml")], alertmanagers=["127.0.0.1:9"])
    conf = tmp_path / "prometheus.yml"
    conf.write_text(text)
    check = promtool("check", "config", conf)
    assert check.ok, check.output
    vllm = yaml.safe_load(text)["scrape_configs"][0]
    assert vllm["file_sd_configs"][0]["files"] == [str(targets)]
    assert "static_configs" not in vllm and "ec2_sd_configs" not in vllm
    # promtool reads the targets file too: a broken one fails the check.
    targets.write_text('[{"targets": ["127.0.0.1:8001"], "labels": {"node": 1}}]')
    broken = promtool("check", "config", conf)
    assert not broken.ok and "checking SD file" in broken.output


def test_rewriting_the_file_replaces_it_whole(tmp_path):
    targets = tmp_path / "backend-targets.json"
    write_targets_file(targets, [Target("127.0.0.1:8001", {"node": "backend-1"})])
    write_targets_file(targets, [])
    assert json.loads(targets.read_text()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["backend-targets.json"]
