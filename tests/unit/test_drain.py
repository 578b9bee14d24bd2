"""The spot drain handler against moto's EC2 and Auto Scaling, fed AWS's own sample events:
it drains only this stack's nodes, starts one replacement, does nothing more for an event it
has seen, and logs one JSON line per event."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from llmfleet.autoscale import drain
from llmfleet.autoscale.drain import Settings
from llmfleet.edge.members import DRAINING_TAG

REGION = "us-east-1"
STACK = "acme-prod"
SETTINGS = Settings(stack=STACK, spot_group="acme-spot", on_demand_group="acme-ondemand")


# Verbatim from "Spot Instance interruption notices", section "EC2 Spot Instance Interruption
# Warning event", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
# (instance-action is one of hibernate, stop, terminate).
@pytest.fixture
def interruption_warning() -> dict[str, Any]:
    return {
        "version": "0",
        "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "yyyy-mm-ddThh:mm:ssZ",
        "region": "us-east-2",
        "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890abcdef0"],
        "detail": {
            "instance-id": "i-1234567890abcdef0",
            "instance-action": "action",
        },
    }


# Verbatim from "EC2 instance rebalance recommendations", section "Use Amazon EventBridge",
# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html
@pytest.fixture
def rebalance_recommendation() -> dict[str, Any]:
    return {
        "version": "0",
        "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Instance Rebalance Recommendation",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "yyyy-mm-ddThh:mm:ssZ",
        "region": "us-east-2",
        "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890abcdef0"],
        "detail": {
            "instance-id": "i-1234567890abcdef0",
        },
    }


def about(event: dict[str, Any], instance_id: str) -> dict[str, Any]:
    """The sample event, for one of moto's instances."""
    event = copy.deepcopy(event)
    event["detail"]["instance-id"] = instance_id
    event["resources"] = [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"]
    return event


class Account:
    """moto's EC2 and Auto Scaling with this stack's two GPU groups, as infra/ builds them."""

    def __init__(self) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.autoscaling = boto3.client("autoscaling", region_name=REGION)
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(
            VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
        self.ec2.create_launch_template(LaunchTemplateName="gpu", LaunchTemplateData={
            "ImageId": "ami-12c6146b", "InstanceType": "g6.xlarge"})

    def spot_group(self, *, desired: int = 2, max_size: int = 4, rebalance: bool = True,
                   stack: str = STACK, name: str = SETTINGS.spot_group) -> None:
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=max_size, DesiredCapacity=desired,
            CapacityRebalance=rebalance, VPCZoneIdentifier=self.subnet,
            MixedInstancesPolicy={
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {"LaunchTemplateName": "gpu",
                                                    "Version": "$Latest"},
                    "Overrides": [{"InstanceType": "g6.xlarge", "WeightedCapacity": "1"}],
                },
                "InstancesDistribution": {"OnDemandBaseCapacity": 0,
                                          "OnDemandPercentageAboveBaseCapacity": 0},
            },
            Tags=self._tags(stack))

    def on_demand_group(self, *, desired: int = 0, max_size: int = 2) -> None:
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=SETTINGS.on_demand_group, MinSize=0, MaxSize=max_size,
            DesiredCapacity=desired, VPCZoneIdentifier=self.subnet,
            LaunchTemplate={"LaunchTemplateName": "gpu", "Version": "$Latest"},
            Tags=self._tags(STACK))

    def instances(self, group: str) -> list[str]:
        return sorted(i["InstanceId"] for i in self.group(group)["Instances"])

    def group(self, name: str) -> dict[str, Any]:
        [found] = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return found

    def desired(self) -> tuple[int, int]:
        return (self.group(SETTINGS.spot_group)["DesiredCapacity"],
                self.group(SETTINGS.on_demand_group)["DesiredCapacity"])

    def tags(self, instance_id: str) -> dict[str, str]:
        [reservation] = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return {t["Key"]: t["Value"] for t in reservation["Instances"][0].get("Tags", [])}

    def drain(self, event: dict[str, Any]) -> dict[str, Any]:
        return drain.drain(event, SETTINGS, ec2=self.ec2, autoscaling=self.autoscaling)

    @staticmethod
    def _tags(stack: str) -> list[dict[str, Any]]:
        return [{"Key": "llmfleet:stack", "Value": stack, "PropagateAtLaunch": True}]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        account = Account()
        yield account


def test_an_interruption_warning_drains_the_node_and_adds_a_spot_node(aws, interruption_warning):
    aws.spot_group(desired=2)
    aws.on_demand_group()
    node = aws.instances(SETTINGS.spot_group)[0]

    record = aws.drain(about(interruption_warning, node))

    assert aws.tags(node)[DRAINING_TAG] == "spot-interruption"
    assert aws.desired() == (3, 0)
    assert len(aws.instances(SETTINGS.spot_group)) == 3
    assert record == {
        "event": "EC2 Spot Instance Interruption Warning",
        "event_id": "12345678-1234-1234-1234-123456789012",
        "instance": node, "stack": STACK, "outcome": "drained", "reason": "spot",
        "group": SETTINGS.spot_group, "desired": {"before": 2, "after": 3},
    }


def test_the_same_event_twice_does_nothing_more(aws, interruption_warning):
    aws.spot_group(desired=2)
    aws.on_demand_group()
    node = aws.instances(SETTINGS.spot_group)[0]
    event = about(interruption_warning, node)

    aws.drain(event)
    again = aws.drain(event)

    assert again["outcome"] == "duplicate"
    assert again["reason"] == "already draining (spot-interruption)"
    assert aws.desired() == (3, 0)


def test_an_interruption_after_the_rebalance_recommendation_does_nothing_more(
        aws, rebalance_recommendation, interruption_warning):
    aws.spot_group(desired=2, rebalance=False)
    aws.on_demand_group()
    node = aws.instances(SETTINGS.spot_group)[0]

    first = aws.drain(about(rebalance_recommendation, node))
    second = aws.drain(about(interruption_warning, node))

    assert (first["outcome"], second["outcome"]) == ("drained", "duplicate")
    assert aws.tags(node)[DRAINING_TAG] == "rebalance-recommendation"
    assert aws.desired() == (3, 0)


def test_capacity_rebalancing_replaces_on_a_rebalance_recommendation(aws,
                                                                     rebalance_recommendation):
    aws.spot_group(desired=2, rebalance=True)
    aws.on_demand_group()
    node = aws.instances(SETTINGS.spot_group)[0]

    record = aws.drain(about(rebalance_recommendation, node))

    assert aws.tags(node)[DRAINING_TAG] == "rebalance-recommendation"
    assert aws.desired() == (2, 0)
    assert (record["group"], record["reason"]) == (
        None, "Capacity Rebalancing launches the replacement")


def test_spot_at_its_maximum_takes_the_replacement_from_the_on_demand_group(
        aws, interruption_warning):
    aws.spot_group(desired=2, max_size=2)
    aws.on_demand_group(desired=0, max_size=2)
    node = aws.instances(SETTINGS.spot_group)[0]

    record = aws.drain(about(interruption_warning, node))

    assert aws.desired() == (2, 1)
    assert len(aws.instances(SETTINGS.on_demand_group)) == 1
    assert record["group"] == SETTINGS.on_demand_group
    assert record["desired"] == {"before": 0, "after": 1}


def test_no_room_anywhere_still_drains_the_node(aws, interruption_warning):
    aws.spot_group(desired=2, max_size=2)
    aws.on_demand_group(desired=1, max_size=1)
    node = aws.instances(SETTINGS.spot_group)[0]

    record = aws.drain(about(interruption_warning, node))

    assert aws.tags(node)[DRAINING_TAG] == "spot-interruption"
    assert aws.desired() == (2, 1)
    assert record["reason"] == f"no room: {SETTINGS.on_demand_group} is at its maximum 1"


def test_another_stacks_node_is_left_alone(aws, interruption_warning):
    aws.spot_group(desired=2)
    aws.on_demand_group()
    aws.spot_group(desired=1, stack="other-prod", name="other-spot")
    theirs = aws.instances("other-spot")[0]

    record = aws.drain(about(interruption_warning, theirs))

    assert record["outcome"] == "ignored"
    assert DRAINING_TAG not in aws.tags(theirs)
    assert aws.desired() == (2, 0)
    assert aws.group("other-spot")["DesiredCapacity"] == 1


def test_an_unknown_instance_and_other_events_are_ignored(aws, interruption_warning):
    aws.spot_group(desired=1)
    aws.on_demand_group()

    # The sample's own id: this account has no such instance.
    assert aws.drain(interruption_warning)["outcome"] == "ignored"
    state_change = {**interruption_warning, "detail-type": "EC2 Instance State-change Notification"}
    assert aws.drain(state_change)["reason"] == "not a spot event"
    assert aws.desired() == (1, 0)


def _handler_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv(drain.STACK_ENV, settings.stack)
    monkeypatch.setenv(drain.SPOT_GROUP_ENV, settings.spot_group)
    monkeypatch.setenv(drain.ON_DEMAND_GROUP_ENV, settings.on_demand_group)


def test_the_lambda_handler_logs_one_json_line_per_event(aws, interruption_warning, capsys,
                                                         monkeypatch):
    aws.spot_group(desired=1)
    aws.on_demand_group()
    _handler_env(monkeypatch, SETTINGS)
    event = about(interruption_warning, aws.instances(SETTINGS.spot_group)[0])

    returned = drain.handler(event, None)
    drain.handler(event, None)

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == returned
    assert json.loads(lines[1])["outcome"] == "duplicate"


def test_a_failure_is_logged_as_one_line_and_raised(aws, interruption_warning, capsys,
                                                    monkeypatch):
    aws.spot_group(desired=1)
    _handler_env(monkeypatch, SETTINGS)  # names an on-demand group that does not exist
    event = about(interruption_warning, aws.instances(SETTINGS.spot_group)[0])

    with pytest.raises(KeyError):
        drain.handler(event, None)

    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["outcome"] == "failed"
