"""Config: how the fleet grows and shrinks (the policy in `llmfleet.autoscale.policy`).

The fleet's bounds are `fleet.min_size`/`max_size` (and `on_demand.*` for the fallback
group); this section holds the policy and its thresholds. The defaults are the seed's rule
where it has one (a queue above 5 per node for 60 s; at 0 for 10 minutes).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from llmfleet.config.base import Strict

POLICIES = "seed | adaptive | fixed:N"
_POLICY = re.compile(r"^(seed|adaptive|fixed:([0-9]{1,4}))$")


class Autoscaling(Strict):
    """Which policy decides the fleet's size, and its thresholds."""

    policy: str = Field("adaptive", description=POLICIES)
    interval_s: float = Field(60.0, ge=1, le=3600, description="seconds between two decisions")
    queue_threshold: float = Field(
        5.0, gt=0, le=10_000, description="waiting requests per ready node that mean too few")
    scale_out_after_s: float = Field(
        60.0, ge=0, le=3600, description="the queue above the threshold this long: scale out")
    scale_in_after_s: float = Field(
        600.0, ge=0, le=86_400,
        description="no queue this long: scale in (seed: one node; adaptive: up to "
                    "scale_in_step idle ones)")
    panic_after_s: float = Field(
        15.0, ge=0, le=3600,
        description="adaptive: a queue of panic_factor x threshold this long sizes for the "
                    "backlog at once, without waiting for scale_out_after_s")
    panic_factor: float = Field(2.0, ge=1, le=100)
    # A T4 at 80 % of its slots is at its knee: every prompt it admits is prefilled in the
    # step its whole batch shares, so the requests on it run longer and the next ones queue.
    target_utilisation: float = Field(
        0.5, gt=0, le=1,
        description="adaptive: the share of a node's measured concurrency to plan for the "
                    "requests on the fleet now")
    # A node runs every sequence in its batch one token per step, and each sequence in the
    # batch, and each prompt it admits, slows the step: the fuller a T4, the more long answers
    # miss 30 s. 0.0625 (2 of a T4's 32 slots): on the bench (docs/autoscaling.md) diurnal
    # meets fixed:max's SLO within its spread over the seeds for 70 % of its cost, while
    # scale_in_step keeps surge below the seed's cost.
    slo_utilisation: float = Field(
        0.0625, gt=0, le=1,
        description="adaptive: the share of a node's measured concurrency to plan for the "
                    "load expected scale_out_lead_s from now (the arrival trend)")
    scale_out_lead_s: float = Field(
        420.0, ge=0, le=3600,
        description="adaptive: how long a node asked for now takes to serve (boot, image "
                    "pull, model load); the arrival trend is projected this far ahead")
    cooldown_s: float = Field(
        300.0, ge=0, le=86_400, description="no scale-in this long after a scale-out")
    max_step: int = Field(8, ge=1, le=1000, description="nodes one decision may add")
    # Several nodes a decision once a surge decays; more than 4 a minute undershoots on the
    # bench's surge (a queue comes back, and a new node serves 7 minutes later).
    scale_in_step: int = Field(
        4, ge=1, le=1000,
        description="adaptive: ready nodes one decision may take out, when the plan leaves "
                    "them idle")
    # Longer than a spot node's usual cold start (boot, image pull, model load: about 7 minutes
    # uncached), or every scale-out also starts on-demand stand-ins it hands back minutes later.
    spot_grace_s: float = Field(
        480.0, ge=0, le=3600,
        description="spot capacity not ready after this long is covered with on-demand nodes")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if not _POLICY.match(value):
            raise ValueError(f"unknown policy; allowed: {POLICIES} (N a whole number)")
        return value

    @property
    def fixed_size(self) -> int | None:
        """N for `fixed:N`, else None."""
        match = _POLICY.match(self.policy)
        return int(match.group(2)) if match and match.group(2) else None
