"""Recording and alerting rules: valid for promtool, thresholds from config, and every alert
fires and stays quiet when it should (promtool test rules)."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from llmfleet.config import FleetConfig, validate
from llmfleet.observability.prometheus import promtool
from llmfleet.observability.rules import (
    ALERT_NAMES,
    ALERTS,
    alert_rules,
    recording_rules,
    render_rules,
)
from llmfleet.paths import repo_root

PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yml"
ISSUE_ALERTS = {
    "LLMFleetHighP99Latency", "LLMFleetGPUSaturated", "LLMFleetHighErrorRate",
    "LLMFleetQueueBacklog", "LLMFleetKVCacheFull", "LLMFleetNoHealthyBackends",
    "LLMFleetTargetDown", "LLMFleetRedisDown", "LLMFleetRateLimitSurge", "LLMFleetEdgeBusy",
}  # fmt: skip


def by_name(config: FleetConfig) -> dict[str, dict]:
    return {rule["alert"]: rule for rule in alert_rules(config)}


def test_the_alerts_are_exactly_the_issues_names():
    assert set(ALERT_NAMES) == ISSUE_ALERTS == set(by_name(FleetConfig()))


@pytest.mark.parametrize("data", [{}, {"alerts": {"high_p99_latency": {"threshold": 2.5,
                                                                       "for_s": 1.5}}}])
def test_promtool_accepts_the_rendered_rules(tmp_path, data):
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(validate(data, "t")))
    check = promtool("check", "rules", rules)
    assert check.ok, check.output
    assert "SUCCESS" in check.output


def test_every_alert_fires_and_stays_quiet_as_promtool_tests_say(tmp_path):
    (tmp_path / "rules.yml").write_text(render_rules(FleetConfig()))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert result.ok, result.output


def test_the_promtool_tests_have_a_firing_and_a_quiet_case_for_every_alert():
    cases = [case for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == quiet == ISSUE_ALERTS


AGGREGATION = re.compile(r"\b(sum|max|min|avg|count|quantile|histogram_quantile|topk|bottomk)\b"
                         r"|\b(or|and|unless)\b")


def aggregates_or_has_alternatives(expr: str, recorded: dict[str, list[str]]) -> bool:
    """Whether `expr`, or a recording rule it reads (at any depth), aggregates series or
    combines alternatives: what a case with a single node and source cannot tell apart."""
    if AGGREGATION.search(expr):
        return True
    return any(name in expr and any(aggregates_or_has_alternatives(e, recorded) for e in exprs)
               for name, exprs in recorded.items())


def sources(test: dict) -> int:
    """How many distinct nodes or scrape targets a promtool test's input series come from."""
    labels = [series_labels(series["series"]) for series in test["input_series"]]
    return max(len({found.get(name) for found in labels} - {None}) for name in ("node", "instance"))


def series_labels(series: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', series))


def test_alerts_that_aggregate_have_cases_with_several_nodes_or_sources_firing_and_quiet():
    # A single node or source cannot tell sum from max, a pooled ratio from one per source, or
    # either side of an `or` from the other.
    recorded: dict[str, list[str]] = {}
    for rule in recording_rules(FleetConfig()):
        recorded.setdefault(rule["record"], []).append(rule["expr"])
    aggregating = {name for name, rule in by_name(FleetConfig()).items()
                   if aggregates_or_has_alternatives(rule["expr"], recorded)}
    assert aggregating >= {"LLMFleetQueueBacklog", "LLMFleetRedisDown", "LLMFleetHighP99Latency"}
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        if sources(test) < 2:
            continue
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert aggregating - firing == set(), "no firing case with several nodes or sources"
    assert aggregating - quiet == set(), "no quiet case with several nodes or sources"


def test_thresholds_and_durations_come_from_the_config():
    config = validate({"alerts": {"high_p99_latency": {"threshold": 12, "for_s": 90},
                                  "gpu_saturated": {"threshold": 80},
                                  "kv_cache_full": {"for_s": 0.5}}}, "t")
    rules = by_name(config)
    assert rules["LLMFleetHighP99Latency"]["expr"].endswith("> 12")
    assert rules["LLMFleetHighP99Latency"]["for"] == "1m30s"
    assert rules["LLMFleetGPUSaturated"]["expr"] == "DCGM_FI_DEV_GPU_UTIL > 80"
    assert rules["LLMFleetGPUSaturated"]["for"] == "5m"
    assert rules["LLMFleetKVCacheFull"]["for"] == "500ms"
    assert "12 s" in rules["LLMFleetHighP99Latency"]["annotations"]["summary"]


def test_rate_windows_and_evaluation_interval_come_from_the_config():
    text = render_rules(validate({"alerts": {"rate_window_s": 20, "scrape_interval_s": 1,
                                             "evaluation_interval_s": 2}}, "t"))
    windows = set(re.findall(r"\[([^\]]+)\]", text))
    assert windows == {"20s"}
    assert [g["interval"] for g in yaml.safe_load(text)["groups"]] == ["2s", "2s"]


def test_every_alert_has_severity_summary_description_and_a_runbook_section():
    runbooks = (repo_root() / "docs" / "runbooks.md").read_text()
    headings = {line[3:].strip().lower() for line in runbooks.splitlines()
                if line.startswith("## ")}
    severities = {spec.name: spec.severity for spec in ALERTS}
    for name, rule in by_name(FleetConfig()).items():
        assert rule["labels"]["severity"] == severities[name]
        assert severities[name] in ("critical", "warning")
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"] and notes["value"]
        url, anchor = notes["runbook_url"].split("#")
        assert url == "docs/runbooks.md"
        assert anchor in headings, f"docs/runbooks.md has no section for {name}"


def test_runbook_links_use_the_configured_base():
    config = validate({"alerts": {"runbook_base_url": "https://example.org/rb.md"}}, "t")
    url = by_name(config)["LLMFleetRedisDown"]["annotations"]["runbook_url"]
    assert url == "https://example.org/rb.md#llmfleetredisdown"


def test_the_critical_alerts_are_the_ones_that_take_the_service_down():
    critical = {spec.name for spec in ALERTS if spec.severity == "critical"}
    assert critical == {"LLMFleetHighP99Latency", "LLMFleetHighErrorRate",
                        "LLMFleetNoHealthyBackends", "LLMFleetRedisDown"}
