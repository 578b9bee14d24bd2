"""The `alerts` section: alert thresholds and how long each must hold, where alerts go, and
the Prometheus/Alertmanager timings that decide how fast they fire.

Secrets never appear here: Slack's webhook URL and PagerDuty's routing key are named by the
path of a file that holds them, and Alertmanager reads that file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from llmfleet.config.base import Strict

SlackChannel = Annotated[
    str,
    StringConstraints(pattern=r"^#[a-z0-9][a-z0-9_-]{0,79}$"),
    Field(description="a Slack channel: '#' and up to 80 lower-case letters, digits, '-', '_'"),
]


class _Rule(Strict):
    for_s: float = Field(..., ge=0, le=86_400, description="how long the condition must hold")


class Sustained(_Rule):
    """An alert whose condition has no threshold (a target is down, ...)."""


class Seconds(_Rule):
    threshold: float = Field(..., gt=0, le=3600, description="seconds")


class Ratio(_Rule):
    threshold: float = Field(..., gt=0, le=1, description="a fraction, 0.05 = 5 %")


class Percent(_Rule):
    threshold: float = Field(..., gt=0, le=100, description="percent")


class Count(_Rule):
    threshold: float = Field(..., ge=0, le=1_000_000)


class Alerts(Strict):
    """Alert rules' thresholds, their destinations and the monitoring timings."""

    slack_channel: SlackChannel = "#llmfleet-alerts"
    slack_webhook_file: Path | None = Field(
        None, description="file holding the Slack incoming-webhook URL (none: no Slack)")
    pagerduty_routing_key_file: Path | None = Field(
        None, description="file holding a PagerDuty Events v2 routing key (none: no PagerDuty)")
    runbook_base_url: str = Field(
        "docs/runbooks.md", min_length=1,
        description="where docs/runbooks.md is published; alerts link to <this>#<alert>")

    scrape_interval_s: float = Field(5, ge=0.5, le=60)
    evaluation_interval_s: float = Field(5, ge=0.5, le=60)
    rate_window_s: float = Field(60, ge=1, le=3600,
                                 description="window of rate() in the recording rules")
    group_wait_s: float = Field(30, ge=0, le=3600)
    group_interval_s: float = Field(300, ge=1, le=86_400)
    repeat_interval_s: float = Field(4 * 3600, ge=60, le=7 * 86_400)

    high_p99_latency: Seconds = Seconds(threshold=30, for_s=300)
    gpu_saturated: Percent = Percent(threshold=95, for_s=300)
    high_error_rate: Ratio = Ratio(threshold=0.05, for_s=120)
    queue_backlog: Count = Count(threshold=10, for_s=300)
    kv_cache_full: Ratio = Ratio(threshold=0.9, for_s=600)
    no_healthy_backends: Sustained = Sustained(for_s=60)
    target_down: Sustained = Sustained(for_s=300)
    redis_down: Sustained = Sustained(for_s=60)
    rate_limit_surge: Ratio = Ratio(threshold=0.2, for_s=300)
    edge_busy: Ratio = Ratio(threshold=0.01, for_s=120)

    @model_validator(mode="before")
    @classmethod
    def _partial_rules_keep_defaults(cls, data: Any) -> Any:
        # `high_p99_latency: {threshold: 20}` changes the threshold and keeps the default for_s.
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            given = merged.get(name)
            if isinstance(given, dict) and isinstance(field.default, _Rule):
                merged[name] = {**field.default.model_dump(), **given}
        return merged

    @field_validator("slack_webhook_file", "pagerduty_routing_key_file", mode="before")
    @classmethod
    def _a_path_not_a_secret(cls, value: Any) -> Any:
        if isinstance(value, str) and "://" in value:
            raise ValueError("must be the path of a file holding the secret, never the secret "
                             "or URL itself (it would end up in rendered configs)")
        return value

    @model_validator(mode="after")
    def _window_holds_two_scrapes(self) -> Alerts:
        if self.rate_window_s < 2 * self.scrape_interval_s:
            raise ValueError(
                f"rate_window_s ({self.rate_window_s:g}) must be at least twice "
                f"scrape_interval_s ({self.scrape_interval_s:g}): rate() needs two samples"
            )
        return self
