"""The scaler handler (AWS Lambda): once a minute, the fleet's size from the scaling policy.

EventBridge runs it on a schedule. Each run

1. reads both GPU groups (sizes, and each instance's lifecycle state and weight) and which of
   their instances carry the draining tag: the policy's nodes, in capacity units;
2. reads the fleet's load the edge published to CloudWatch (`llmfleet.autoscale.cloudwatch`);
3. runs `decide` (`llmfleet.autoscale.policy`) with the settings `pulumi up` gave it and the
   times it last scaled, kept in an SSM parameter (the desired sizes are the groups' own); a
   node's concurrency is what a queue measured in the last hour, else what `pulumi up` says
   vLLM is started to run at once (`NODE_CONCURRENCY_ENV`);
4. sets a group's desired capacity only where it differs, within the group's bounds;
5. prints one JSON line: what it saw, what it decided and why, what it changed.

When CloudWatch cannot be read it changes nothing and says why. With no data (the edge is
down or has not published yet) the policy never scales in. Auto Scaling chooses which instance
leaves on a scale-in; the terminating lifecycle hook lets it finish its requests first.

It runs on the Lambda runtime's boto3 and imports nothing outside the standard library but
this package's pydantic-free modules.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3

from llmfleet.autoscale.cloudwatch import CloudWatchSource
from llmfleet.autoscale.policy import (
    Decision,
    Group,
    Node,
    NodeState,
    PolicySettings,
    ScalerState,
    decide,
)
from llmfleet.autoscale.sources import SourceError, observations
from llmfleet.edge.members import DRAINING_TAG

# The Lambda's environment, set by infra/scaler.py.
STACK_ENV = "LLMFLEET_STACK"
SPOT_GROUP_ENV = "LLMFLEET_SPOT_GROUP"
ON_DEMAND_GROUP_ENV = "LLMFLEET_ON_DEMAND_GROUP"
POLICY_ENV = "LLMFLEET_POLICY"  # PolicySettings as JSON
PERIOD_ENV = "LLMFLEET_METRIC_PERIOD_S"
STATE_PARAMETER_ENV = "LLMFLEET_STATE_PARAMETER"
# Requests a capacity unit is started to run at once (vLLM's --max-num-seqs, else the instance
# family's preset, over the weight): the policy's node concurrency until a queue measures it.
# Absent: unknown, measured only.
NODE_CONCURRENCY_ENV = "LLMFLEET_NODE_CONCURRENCY"

# Auto Scaling's lifecycle states, as the policy counts them. Warm-pool instances are not in a
# group's instance list; standby and detaching ones count for nothing.
BOOTING = frozenset({"Pending", "Pending:Wait", "Pending:Proceed"})
READY = frozenset({"InService"})
LEAVING = frozenset({"Terminating", "Terminating:Wait", "Terminating:Proceed"})


@dataclass(frozen=True)
class Settings:
    stack: str
    spot_group: str
    on_demand_group: str
    policy: PolicySettings
    period_s: int
    state_parameter: str
    node_concurrency: float | None = None  # NODE_CONCURRENCY_ENV

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        concurrency = env.get(NODE_CONCURRENCY_ENV, "").strip()
        return cls(env[STACK_ENV], env[SPOT_GROUP_ENV], env[ON_DEMAND_GROUP_ENV],
                   PolicySettings.from_json(json.loads(env[POLICY_ENV])),
                   int(env[PERIOD_ENV]), env[STATE_PARAMETER_ENV],
                   float(concurrency) if concurrency else None)


@dataclass(frozen=True)
class GroupSizes:
    name: str
    desired: int
    min_size: int
    max_size: int

    def bounded(self, desired: int) -> int:
        return max(self.min_size, min(self.max_size, desired))


def scale(settings: Settings, *, autoscaling: Any, ec2: Any, cloudwatch: Any, ssm: Any,
          now: float) -> dict[str, Any]:
    """One run with boto3 clients; returns the log record."""
    groups = {g["AutoScalingGroupName"]: g for g in autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[settings.spot_group, settings.on_demand_group]
    )["AutoScalingGroups"]}
    missing = {settings.spot_group, settings.on_demand_group} - set(groups)
    if missing:
        raise LookupError(f"no Auto Scaling group named {sorted(missing)}")
    spot, on_demand = (_sizes(groups[name])
                       for name in (settings.spot_group, settings.on_demand_group))
    nodes = fleet_nodes(groups[spot.name], groups[on_demand.name], ec2, now)
    times = _load_times(ssm, settings.state_parameter)
    state = ScalerState(spot=spot.desired, on_demand=on_demand.desired, **times)
    record: dict[str, Any] = {"stack": settings.stack, "policy": settings.policy.policy,
                              "nodes": _counts(nodes),
                              "desired": {"spot": spot.desired, "on_demand": on_demand.desired}}
    try:
        metrics = CloudWatchSource(cloudwatch, settings.stack, settings.policy,
                                   settings.period_s, settings.node_concurrency).read(now)
    except SourceError as error:
        return {**record, "outcome": "no decision", "reason": str(error)}
    obs = observations(now, nodes, metrics)
    decision = decide(obs, settings.policy, state)
    record.update(waiting=obs.waiting, running=obs.running, covered_s=obs.windows.covered_s,
                  reason=decision.reason)
    changed = _apply(autoscaling, decision, spot, on_demand)
    if decision.state is not None:
        _save_times(ssm, settings.state_parameter, decision.state, times)
    return {**record, "outcome": "changed" if changed else "unchanged", "changes": changed}


def fleet_nodes(spot: Mapping[str, Any], on_demand: Mapping[str, Any], ec2: Any,
                now: float) -> list[Node]:
    """Both groups' instances as the policy's nodes: one node per capacity unit (an instance of
    weight 2 is two), booting until in service, draining when terminating or tagged so."""
    members = [(Group.SPOT, i) for i in spot["Instances"]] + [
        (Group.ON_DEMAND, i) for i in on_demand["Instances"]]
    counted = [(g, i) for g, i in members
               if i["LifecycleState"] in BOOTING | READY | LEAVING]
    described = _describe(ec2, [i["InstanceId"] for _, i in counted])
    nodes = []
    for group, instance in counted:
        tags, launched = described.get(instance["InstanceId"], ({}, now))
        lifecycle = instance["LifecycleState"]
        if lifecycle in LEAVING or DRAINING_TAG in tags:
            state = NodeState.DRAINING
        elif lifecycle in READY:
            state = NodeState.READY
        else:
            state = NodeState.BOOTING
        units = int(instance.get("WeightedCapacity") or 1)
        nodes.extend(Node(f"{instance['InstanceId']}/{unit}" if units > 1
                          else instance["InstanceId"], group, state, max(0.0, now - launched))
                     for unit in range(units))
    return nodes


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: one JSON log line per run, also when the run fails."""
    stack = os.environ.get(STACK_ENV)
    try:
        record = scale(Settings.from_env(os.environ), autoscaling=boto3.client("autoscaling"),
                       ec2=boto3.client("ec2"), cloudwatch=boto3.client("cloudwatch"),
                       ssm=boto3.client("ssm"), now=time.time())
    except Exception as error:
        _log({"stack": stack, "outcome": "failed", "error": repr(error)})
        raise
    _log(record)
    return record


def _sizes(group: Mapping[str, Any]) -> GroupSizes:
    return GroupSizes(group["AutoScalingGroupName"], group["DesiredCapacity"],
                      group["MinSize"], group["MaxSize"])


def _apply(autoscaling: Any, decision: Decision, spot: GroupSizes,
           on_demand: GroupSizes) -> dict[str, dict[str, int]]:
    changed = {}
    for label, group, wanted in (("spot", spot, decision.spot),
                                 ("on_demand", on_demand, decision.on_demand)):
        target = group.bounded(wanted)
        if target != group.desired:
            autoscaling.set_desired_capacity(AutoScalingGroupName=group.name,
                                             DesiredCapacity=target, HonorCooldown=False)
            changed[label] = {"before": group.desired, "after": target}
    return changed


def _describe(ec2: Any, instance_ids: Sequence[str]) -> dict[str, tuple[dict[str, str], float]]:
    """Each instance's tags and launch time (seconds since the epoch)."""
    if not instance_ids:
        return {}
    found = {}
    for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=list(instance_ids)):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                found[instance["InstanceId"]] = (tags, instance["LaunchTime"].timestamp())
    return found


# The times the policy remembers; the desired sizes it remembers are the groups' own.
_TIMES = ("last_scale_out_at", "last_scale_in_at")


def _load_times(ssm: Any, parameter: str) -> dict[str, float | None]:
    try:
        stored = json.loads(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        stored = {}
    return {name: stored.get(name) for name in _TIMES}


def _save_times(ssm: Any, parameter: str, state: ScalerState,
                before: Mapping[str, float | None]) -> None:
    times = {name: getattr(state, name) for name in _TIMES}
    if times != dict(before):
        ssm.put_parameter(Name=parameter, Value=json.dumps(times), Type="String",
                          Overwrite=True)


def _counts(nodes: Sequence[Node]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        key = f"{node.group.value}_{node.state.value}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _log(record: Mapping[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True, default=str), flush=True)
