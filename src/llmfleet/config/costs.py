"""Config: what keeps a stack's bill in hand on AWS, off-hours and a budget.

`off_hours` takes the GPU groups to zero on a schedule (nights, weekends) and gives them their
bounds back after; the scaler stays within the groups' bounds, so it follows the schedule.
`budget` is an AWS Budget on the stack's cost-allocation tag that e-mails at thresholds.
"""

from __future__ import annotations

import re
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from llmfleet.config.base import Strict

# Auto Scaling's recurrence: the five fields of Unix cron (minute hour day month weekday).
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/\-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _cron(value: str) -> str:
    fields = value.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError("must be a cron expression of five fields: minute hour day month "
                         "weekday (for example '0 22 * * *')")
    return " ".join(fields)


class OffHours(Strict):
    """When the GPU groups go to zero and when they come back, in one time zone."""

    time_zone: str = Field("UTC", description="an IANA time zone, for example Asia/Karachi")
    stop: str | None = Field(
        None, description="cron (minute hour day month weekday): the GPU groups go to zero")
    start: str | None = Field(
        None, description="cron: the GPU groups get their configured bounds back")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as UTC or "
                             "Asia/Karachi") from None
        return value

    @field_validator("stop", "start")
    @classmethod
    def _cron_fields(cls, value: str | None) -> str | None:
        return None if value is None else _cron(value)

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.stop is None) != (self.start is None):
            raise ValueError("off_hours needs both stop and start, or neither (no schedule)")
        return self

    @property
    def enabled(self) -> bool:
        return self.stop is not None


class Budget(Strict):
    """An AWS Budget on this stack's costs, with e-mail notifications."""

    monthly_usd: float | None = Field(
        None, gt=0, le=1_000_000, description="the month's budget in USD; none: no budget")
    thresholds_percent: tuple[int, ...] = Field(
        (50, 80, 100), min_length=1, max_length=10,
        description="actual spend at these percentages of the budget notifies")
    forecast: bool = Field(True, description="also notify when the month's forecast passes 100 %")
    emails: tuple[str, ...] = Field((), max_length=10, description="who is notified")
    slack: bool = Field(
        False, description="also post each notification to the Slack channel of "
                           "monitor.slack_webhook_parameter (an SNS topic and a small Lambda)")

    @field_validator("thresholds_percent")
    @classmethod
    def _percentages(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= p <= 1000 for p in value) or len(set(value)) != len(value):
            raise ValueError("must be distinct whole percentages from 1 to 1000")
        return tuple(sorted(value))

    @field_validator("emails")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in value if not _EMAIL.match(e)]
        if bad:
            raise ValueError(f"not e-mail addresses: {bad}")
        return value

    @model_validator(mode="after")
    def _someone_to_tell(self) -> Self:
        if self.monthly_usd is not None and not self.emails and not self.slack:
            raise ValueError("budget.monthly_usd needs at least one address in budget.emails "
                             "or budget.slack: true (a budget that notifies nobody keeps no "
                             "bill in hand)")
        return self
