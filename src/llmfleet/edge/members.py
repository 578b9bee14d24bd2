"""Where the edge's upstreams come from: the fleet's members, from one of two sources.

On AWS the members are the instances of the two GPU Auto Scaling groups; in the sandbox they
are the backend processes the sandbox started, listed in a JSON file it keeps current. Both
give the same `Member` records, so one syncer serves both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The drain Lambda (spot interruption warning) sets this tag on an instance it takes out.
DRAINING_TAG = "llmfleet:draining"
# Auto Scaling's lifecycle states: in service takes traffic; terminating finishes what it has;
# every other state (pending, warm pool, standby) is not a member of the edge at all.
SERVING = frozenset({"InService"})
TERMINATING = frozenset({"Terminating", "Terminating:Wait", "Terminating:Proceed"})


@dataclass(frozen=True)
class Member:
    """One model server the edge may send requests to."""

    name: str
    host: str
    port: int
    instance_type: str | None = None  # picks the weight under GPU-weighted balancing
    draining: bool = False  # finish what it has, take nothing new

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def group_members(autoscaling: Any, ec2: Any, groups: Sequence[str], port: int) -> list[Member]:
    """The in-service and terminating instances of `groups` (boto3 autoscaling and ec2
    clients); terminating ones and those tagged draining come back `draining`."""
    states: dict[str, str] = {}
    pages = autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
        AutoScalingGroupNames=list(groups)
    )
    for page in pages:
        for group in page["AutoScalingGroups"]:
            for instance in group["Instances"]:
                if instance["LifecycleState"] in SERVING | TERMINATING:
                    states[instance["InstanceId"]] = instance["LifecycleState"]
    if not states:
        return []
    members = []
    for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=sorted(states)):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                address = instance.get("PrivateIpAddress")
                if address is None:
                    continue
                tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
                tagged = tags.get(DRAINING_TAG, "").lower() not in ("", "false")
                members.append(Member(
                    name=instance["InstanceId"],
                    host=address,
                    port=port,
                    instance_type=instance.get("InstanceType"),
                    draining=tagged or states[instance["InstanceId"]] not in SERVING,
                ))
    return members


def read_members_file(path: Path) -> list[Member]:
    """The sandbox's backends, as the sandbox last wrote them (no file: no members yet)."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [Member(**entry) for entry in entries]


def write_members_file(path: Path, members: Sequence[Member]) -> None:
    """Replace the file in one step, so the syncer never reads half a list."""
    candidate = path.with_name(path.name + ".tmp")
    candidate.write_text(json.dumps([asdict(m) for m in members], indent=2))
    os.replace(candidate, path)
