"""The `alerts` config section: the issue's defaults, partial overrides, and secrets kept out."""

import pytest

from llmfleet.config import ConfigError, FleetConfig, validate


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate(data, "test.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_defaults_are_the_issues_thresholds_and_durations():
    alerts = FleetConfig().alerts
    assert (alerts.high_p99_latency.threshold, alerts.high_p99_latency.for_s) == (30, 300)
    assert (alerts.gpu_saturated.threshold, alerts.gpu_saturated.for_s) == (95, 300)
    assert (alerts.high_error_rate.threshold, alerts.high_error_rate.for_s) == (0.05, 120)
    assert (alerts.kv_cache_full.threshold, alerts.kv_cache_full.for_s) == (0.9, 600)
    assert alerts.no_healthy_backends.for_s == 60
    assert 5 <= alerts.scrape_interval_s <= 15
    assert alerts.slack_webhook_file is None and alerts.pagerduty_routing_key_file is None


def test_a_partial_rule_keeps_the_default_for_the_rest():
    alerts = validate({"alerts": {"high_p99_latency": {"threshold": 12},
                                  "target_down": {"for_s": 30}}}, "t").alerts
    assert (alerts.high_p99_latency.threshold, alerts.high_p99_latency.for_s) == (12, 300)
    assert alerts.target_down.for_s == 30


def test_a_webhook_url_instead_of_a_file_is_refused_without_echoing_more_than_the_key():
    found = problems({"alerts": {"slack_webhook_file": "https://hooks.slack.com/services/T/B/x"}})
    assert len(found) == 1
    assert found[0].startswith("alerts.slack_webhook_file:")
    assert "path of a file" in found[0]


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"high_error_rate": {"threshold": 5}}, "alerts.high_error_rate.threshold",
         "less than or equal to 1"),
        ({"gpu_saturated": {"threshold": 120}}, "alerts.gpu_saturated.threshold",
         "less than or equal to 100"),
        ({"target_down": {"threshold": 1}}, "alerts.target_down.threshold", "allowed keys here"),
        ({"slack_channel": "alerts"}, "alerts.slack_channel", "'#'"),
        ({"scrape_interval_s": 0}, "alerts.scrape_interval_s", "greater than or equal to 0.5"),
        ({"pager": "x"}, "alerts.pager", "allowed keys here"),
    ],
)
def test_bad_values_are_named_with_what_is_allowed(data, key, allowed):
    found = problems({"alerts": data})
    assert any(p.startswith(key + ":") and allowed in p for p in found), found


def test_the_rate_window_must_hold_two_scrapes():
    found = problems({"alerts": {"scrape_interval_s": 10, "rate_window_s": 15}})
    assert any("rate_window_s (15) must be at least twice" in p for p in found), found
