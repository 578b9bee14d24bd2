"""The spot drain handler against moto's EC2 and Auto Scaling, fed AWS's own sample events:
it drains only this stack's nodes, starts one replacement, does nothing more for an event it
has seen, and logs one JSON line per event."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws
from moto_fleet import ON_DEMAND_GROUP, REGION, SPOT_GROUP, STACK, MotoFleet

from llmfleet.autoscale import drain
from llmfleet.autoscale.drain import Settings
from llmfleet.edge.members import DRAINING_TAG

SETTINGS = Settings(stack=STACK, spot_group=SPOT_GROUP, on_demand_group=ON_DEMAND_GROUP)


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


class Account(MotoFleet):
    def drain(self, event: dict[str, Any]) -> dict[str, Any]:
        return drain.drain(event, SETTINGS, ec2=self.ec2, autoscaling=self.autoscaling)


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
