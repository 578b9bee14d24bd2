"""The spot drain handler (AWS Lambda): a GPU node AWS is about to take back gets no new
requests, and its replacement starts now rather than after it is gone.

EventBridge hands it two EC2 events: `EC2 Instance Rebalance Recommendation` (the instance is at
elevated risk; it can come minutes ahead) and `EC2 Spot Instance Interruption Warning` (two
minutes ahead). For an instance of this stack (its `llmfleet:stack` tag) the handler

1. tags it `llmfleet:draining`: the edge's sync agent marks it `down` within one pass, so nginx
   sends it nothing new while the streams it has finish;
2. makes sure a replacement starts now, by raising one group's desired capacity one unit above
   what that group has launched or was asked for (`plan` says which group, and when none).

An instance that already carries the tag was handled by an earlier event (the same event
delivered twice, or the other kind for the same instance), so nothing more happens. Each event
gives one JSON line on stdout, which Lambda sends to CloudWatch Logs.

It runs on the Lambda runtime's boto3 and imports nothing else outside the standard library but
`llmfleet.edge.members` (no pydantic, no config model: the zip holds plain source only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from llmfleet.edge.members import DRAINING_TAG

INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
# The draining tag's value says which event took the node out.
TAG_VALUES = {INTERRUPTION: "spot-interruption", REBALANCE: "rebalance-recommendation"}
STACK_TAG = "llmfleet:stack"
# Instances a group has launched or is launching: they count toward its capacity.
LAUNCHED = frozenset({"Pending", "Pending:Wait", "Pending:Proceed", "InService"})

# The Lambda's environment, set by infra/drain.py.
STACK_ENV = "LLMFLEET_STACK"
SPOT_GROUP_ENV = "LLMFLEET_SPOT_GROUP"
ON_DEMAND_GROUP_ENV = "LLMFLEET_ON_DEMAND_GROUP"


@dataclass(frozen=True)
class GroupView:
    """One Auto Scaling group as the handler sees it: sizes, and the capacity units of its
    launched (or launching) instances, draining ones apart."""

    name: str
    desired: int
    max_size: int
    capacity_rebalance: bool
    members: frozenset[str]  # every instance in the group, whatever its state
    serving: int  # launched and not draining
    draining: int  # launched and tagged draining (or being drained now)

    @property
    def launched(self) -> int:
        return self.serving + self.draining

    @property
    def room(self) -> bool:
        return self.target <= self.max_size

    @property
    def target(self) -> int:
        """One unit above what the group has launched or was asked for: with weighted types
        the group can hold more units than its desired capacity, and then desired + 1 would
        launch nothing."""
        return max(self.desired, self.launched) + 1


@dataclass(frozen=True)
class Plan:
    """Which group grows to which desired capacity (none: no change), and why."""

    reason: str
    group: GroupView | None = None

    @property
    def desired(self) -> int | None:
        return self.group.target if self.group else None


def plan(event_type: str, instance_id: str, spot: GroupView, on_demand: GroupView) -> Plan:
    """Where the drained node's replacement comes from.

    - Nothing, when the node is in neither GPU group, or its group's serving capacity already
      covers its desired capacity (a replacement is launching: Capacity Rebalancing got there
      first, or the group holds spare weighted units).
    - Nothing, for a rebalance recommendation in a group with Capacity Rebalancing and spot to
      spare: Auto Scaling launches that replacement itself, and a second would be one too many.
    - Else the spot group, unless spot is short: the group is at its maximum, or it has
      launched less than it was asked for (launches fail for lack of spot capacity or quota).
      Then the on-demand group, whose warm pool starts a node fastest.
    - Nothing, when the chosen group is at its maximum too: the node still drains.
    """
    home = next((g for g in (spot, on_demand) if instance_id in g.members), None)
    if home is None:
        return Plan("in neither GPU group: drained only")
    if home.serving >= home.desired:
        return Plan(f"{home.name} already has {home.serving} serving units for its desired "
                    f"{home.desired}: a replacement is launching")
    spot_short = not spot.room or spot.launched < spot.desired
    if event_type == REBALANCE and home is spot and spot.capacity_rebalance and not spot_short:
        return Plan("Capacity Rebalancing launches the replacement")
    chosen = on_demand if spot_short else spot
    if not chosen.room:
        return Plan(f"no room: {chosen.name} is at its maximum {chosen.max_size}")
    why = "spot is short (at its maximum or not filled): on-demand" if spot_short else "spot"
    return Plan(why, chosen)


@dataclass(frozen=True)
class Settings:
    stack: str
    spot_group: str
    on_demand_group: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(env[STACK_ENV], env[SPOT_GROUP_ENV], env[ON_DEMAND_GROUP_ENV])


def drain(event: Mapping[str, Any], settings: Settings, *, ec2: Any, autoscaling: Any
          ) -> dict[str, Any]:
    """Handle one EventBridge event with boto3 `ec2` and `autoscaling` clients; returns the
    log record."""
    record = {**_about(event), "stack": settings.stack}
    event_type, instance_id = record["event"], record["instance"]
    if event.get("source") != "aws.ec2" or event_type not in TAG_VALUES or not instance_id:
        return {**record, "outcome": "ignored", "reason": "not a spot event"}
    tags = _instance_tags(ec2, instance_id)
    if tags is None or tags.get(STACK_TAG) != settings.stack:
        return {**record, "outcome": "ignored", "reason": "not an instance of this stack"}
    if DRAINING_TAG in tags:
        return {**record, "outcome": "duplicate",
                "reason": f"already draining ({tags[DRAINING_TAG]})"}

    ec2.create_tags(Resources=[instance_id],
                    Tags=[{"Key": DRAINING_TAG, "Value": TAG_VALUES[event_type]}])
    spot, on_demand = _groups(autoscaling, ec2, settings, instance_id)
    decided = plan(event_type, instance_id, spot, on_demand)
    record.update(outcome="drained", reason=decided.reason, group=None)
    if decided.group is not None:
        autoscaling.set_desired_capacity(AutoScalingGroupName=decided.group.name,
                                         DesiredCapacity=decided.desired, HonorCooldown=False)
        record.update(group=decided.group.name,
                      desired={"before": decided.group.desired, "after": decided.desired})
    return record


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: one JSON log line per event, also when handling fails (then
    Lambda's retries find the tag and do nothing more)."""
    try:
        record = drain(event, Settings.from_env(os.environ), ec2=boto3.client("ec2"),
                       autoscaling=boto3.client("autoscaling"))
    except Exception as error:
        _log({**_about(event), "stack": os.environ.get(STACK_ENV), "outcome": "failed",
              "error": repr(error)})
        raise
    _log(record)
    return record


def _about(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"event": event.get("detail-type", ""), "event_id": event.get("id"),
            "instance": (event.get("detail") or {}).get("instance-id")}


def _log(record: Mapping[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True), flush=True)


def _instance_tags(ec2: Any, instance_id: str) -> dict[str, str] | None:
    """The instance's tags, or None when EC2 does not know it (gone already, or a malformed
    id: neither is ours to drain)."""
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as error:
        if error.response["Error"]["Code"].startswith("InvalidInstanceID"):
            return None
        raise
    instances = [i for r in reservations for i in r["Instances"]]
    if not instances:
        return None
    return {t["Key"]: t["Value"] for t in instances[0].get("Tags", [])}


def _groups(autoscaling: Any, ec2: Any, settings: Settings, drained: str
            ) -> tuple[GroupView, GroupView]:
    names = [settings.spot_group, settings.on_demand_group]
    found = {g["AutoScalingGroupName"]: g for g in autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=names)["AutoScalingGroups"]}
    launched = [i["InstanceId"] for g in found.values() for i in g["Instances"]
                if i["LifecycleState"] in LAUNCHED]
    # The tag just written may not show yet (EC2 tags are eventually consistent).
    draining = _draining(ec2, launched) | {drained}
    spot, on_demand = (_view(found[name], draining) for name in names)
    return spot, on_demand


def _draining(ec2: Any, instance_ids: Sequence[str]) -> set[str]:
    if not instance_ids:
        return set()
    pages = ec2.get_paginator("describe_instances").paginate(
        InstanceIds=list(instance_ids),
        Filters=[{"Name": "tag-key", "Values": [DRAINING_TAG]}])
    return {i["InstanceId"] for page in pages for r in page["Reservations"]
            for i in r["Instances"]}


def _view(group: Mapping[str, Any], draining: set[str]) -> GroupView:
    serving = drained = 0
    for instance in group["Instances"]:
        if instance["LifecycleState"] not in LAUNCHED:
            continue
        # Mixed-instances groups count each type's weight; a single-type group, 1 each.
        units = int(instance.get("WeightedCapacity") or 1)
        if instance["InstanceId"] in draining:
            drained += units
        else:
            serving += units
    return GroupView(
        name=group["AutoScalingGroupName"],
        desired=group["DesiredCapacity"],
        max_size=group["MaxSize"],
        capacity_rebalance=bool(group.get("CapacityRebalance")),
        members=frozenset(i["InstanceId"] for i in group["Instances"]),
        serving=serving,
        draining=drained,
    )
