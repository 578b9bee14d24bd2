"""The scaler handler against moto's Auto Scaling, EC2, CloudWatch and SSM, on known metric
series as the edge publishes them: it scales out on a queue, in after a quiet window, never in
on missing data, stays within the groups' bounds, and logs one JSON line per run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws
from moto_fleet import ON_DEMAND_GROUP, REGION, SPOT_GROUP, STACK, MotoFleet

from llmfleet.autoscale import scaler
from llmfleet.autoscale.cloudwatch import FleetSample, metric_data
from llmfleet.autoscale.policy import PolicySettings
from llmfleet.autoscale.scaler import Settings
from llmfleet.config import validate
from llmfleet.edge.members import DRAINING_TAG

PARAMETER = f"/llmfleet/{STACK}/scaler-state"
PERIOD_S = 10


def settings(**autoscaling: object) -> Settings:
    config = validate({"fleet": {"min_size": 1, "max_size": 12},
                       "on_demand": {"min_size": 0, "max_size": 2},
                       "autoscaling": {"policy": "adaptive", **autoscaling}}, "test")
    return Settings(STACK, SPOT_GROUP, ON_DEMAND_GROUP, PolicySettings.of(config), PERIOD_S,
                    PARAMETER)


class Account(MotoFleet):
    def __init__(self) -> None:
        super().__init__()
        self.cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        self.ssm = boto3.client("ssm", region_name=REGION)
        self.ssm.put_parameter(Name=PARAMETER, Value="{}", Type="String")
        # The launch time moto gives its instances: the runs happen after it.
        self.now = datetime.now(UTC).timestamp() + 3600

    def publish(self, seconds: int, sample: FleetSample, *, until: float | None = None,
                stack: str = STACK) -> None:
        """The edge's samples, one a pass, for the `seconds` before `until` (default now)."""
        end = self.now if until is None else until
        for ago in range(0, seconds, PERIOD_S):
            at = datetime.fromtimestamp(end - ago, UTC)
            self.cloudwatch.put_metric_data(Namespace="llmfleet",
                                            MetricData=metric_data(stack, sample, at))

    def run(self, config: Settings | None = None, at: float | None = None) -> dict:
        return scaler.scale(config or settings(), autoscaling=self.autoscaling, ec2=self.ec2,
                            cloudwatch=self.cloudwatch, ssm=self.ssm,
                            now=self.now if at is None else at)

    def remembered(self) -> dict:
        return json.loads(self.ssm.get_parameter(Name=PARAMETER)["Parameter"]["Value"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield Account()


def test_a_queue_for_a_minute_sizes_the_spot_group_for_the_backlog(aws):
    aws.spot_group(desired=2, max_size=12)
    aws.on_demand_group(desired=0)
    # 2 ready nodes, each full at 8 running, 20 waiting per node for 3 minutes.
    aws.publish(180, FleetSample(waiting=40, running=16, ready_capacity=2, unit_concurrency=8))

    record = aws.run()

    # (16 running + 40 waiting) / (8 per node at 50 %) = 14 nodes, 12 more: max_step's 8.
    assert aws.desired() == (10, 0)
    assert record["outcome"] == "changed"
    assert record["changes"] == {"spot": {"before": 2, "after": 10}}
    assert "+8" in record["reason"]
    assert aws.remembered()["last_scale_out_at"] == aws.now


def test_no_data_is_no_scale_in(aws):
    aws.spot_group(desired=3, max_size=12)
    aws.on_demand_group(desired=0)

    record = aws.run()

    assert aws.desired() == (3, 0)
    assert record["outcome"] == "unchanged" and record["changes"] == {}
    assert "no scale-in on missing data" in record["reason"]
    assert record["covered_s"] == 0


def test_another_stacks_metrics_are_no_data_for_this_one(aws):
    aws.spot_group(desired=3, max_size=12)
    aws.on_demand_group(desired=0)
    aws.publish(900, FleetSample(waiting=0, running=0, ready_capacity=3), stack="other-prod")

    record = aws.run()

    assert aws.desired() == (3, 0) and "no scale-in on missing data" in record["reason"]


def test_a_quiet_window_removes_the_idle_nodes_down_to_the_minimum(aws):
    aws.spot_group(desired=3, max_size=12)
    aws.on_demand_group(desired=0)
    aws.publish(900, FleetSample(waiting=0, running=0, ready_capacity=3, unit_concurrency=8))

    # Nothing runs: both nodes above fleet.min_size go in one decision (scale_in_step 4).
    first = aws.run()
    assert aws.desired() == (1, 0) and first["changes"] == {"spot": {"before": 3, "after": 1}}
    assert aws.remembered()["last_scale_in_at"] == aws.now
    # A minute later, still quiet: never below fleet.min_size.
    aws.publish(60, FleetSample(waiting=0, running=0, ready_capacity=1, unit_concurrency=8),
                until=aws.now + 60)
    last = aws.run(at=aws.now + 60)
    assert aws.desired() == (1, 0) and "at the minimum 1" in last["reason"]


def test_a_gap_in_the_published_series_is_no_history_for_scale_in(aws):
    aws.spot_group(desired=3, max_size=12)
    aws.on_demand_group(desired=0)
    # Quiet, but the edge published nothing from 5 minutes ago until 1 minute ago.
    aws.publish(60, FleetSample(waiting=0, running=0, ready_capacity=3))
    aws.publish(600, FleetSample(waiting=0, running=0, ready_capacity=3), until=aws.now - 300)

    record = aws.run()

    assert aws.desired() == (3, 0) and "no scale-in on missing data" in record["reason"]


def test_the_groups_bounds_hold_whatever_the_policy_asks(aws):
    aws.spot_group(desired=2, max_size=4)  # the group's own maximum is below fleet.max_size
    aws.on_demand_group(desired=0)
    aws.publish(180, FleetSample(waiting=400, running=16, ready_capacity=2, unit_concurrency=8))

    record = aws.run()

    assert aws.desired() == (4, 0) and record["changes"]["spot"]["after"] == 4


def test_a_draining_node_is_no_capacity(aws):
    aws.spot_group(desired=2, max_size=12)
    aws.on_demand_group(desired=0)
    draining = aws.instances(SPOT_GROUP)[0]
    aws.ec2.create_tags(Resources=[draining], Tags=[{"Key": DRAINING_TAG, "Value": "x"}])

    record = aws.run()

    assert record["nodes"] == {"spot_draining": 1, "spot_ready": 1}


def test_the_same_decision_twice_changes_nothing_the_second_time(aws):
    aws.spot_group(desired=2, max_size=12)
    aws.on_demand_group(desired=0)
    fixed = settings(policy="fixed:5")
    assert aws.run(fixed)["changes"] == {"spot": {"before": 2, "after": 5}}
    activities = aws.autoscaling.describe_scaling_activities(AutoScalingGroupName=SPOT_GROUP)

    again = aws.run(fixed)

    assert again["outcome"] == "unchanged"
    assert aws.autoscaling.describe_scaling_activities(
        AutoScalingGroupName=SPOT_GROUP)["Activities"] == activities["Activities"]


def test_the_handler_reads_its_environment_and_logs_one_json_line(aws, monkeypatch, capsys):
    aws.spot_group(desired=2, max_size=12)
    aws.on_demand_group(desired=0)
    config = settings()
    monkeypatch.setenv(scaler.STACK_ENV, STACK)
    monkeypatch.setenv(scaler.SPOT_GROUP_ENV, SPOT_GROUP)
    monkeypatch.setenv(scaler.ON_DEMAND_GROUP_ENV, ON_DEMAND_GROUP)
    monkeypatch.setenv(scaler.POLICY_ENV, json.dumps(config.policy.to_json()))
    monkeypatch.setenv(scaler.PERIOD_ENV, str(PERIOD_S))
    monkeypatch.setenv(scaler.STATE_PARAMETER_ENV, PARAMETER)

    record = scaler.handler({"source": "aws.events"}, None)

    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) == json.loads(json.dumps(record, default=str))
    assert record["stack"] == STACK and record["policy"] == "adaptive"


def test_a_failed_run_is_logged_and_raised(aws, monkeypatch, capsys):
    monkeypatch.setenv(scaler.STACK_ENV, STACK)
    monkeypatch.setenv(scaler.SPOT_GROUP_ENV, "gone")
    monkeypatch.setenv(scaler.ON_DEMAND_GROUP_ENV, "gone-too")
    monkeypatch.setenv(scaler.POLICY_ENV, json.dumps(settings().policy.to_json()))
    monkeypatch.setenv(scaler.PERIOD_ENV, str(PERIOD_S))
    monkeypatch.setenv(scaler.STATE_PARAMETER_ENV, PARAMETER)

    with pytest.raises(LookupError, match="no Auto Scaling group named"):
        scaler.handler({}, None)
    assert json.loads(capsys.readouterr().out)["outcome"] == "failed"


def test_the_weighted_units_of_an_instance_are_nodes_of_the_policy():
    group = {"Instances": [{"InstanceId": "i-1", "LifecycleState": "InService",
                            "WeightedCapacity": "2"},
                           {"InstanceId": "i-2", "LifecycleState": "Pending:Wait"},
                           {"InstanceId": "i-3", "LifecycleState": "Terminating:Wait"},
                           {"InstanceId": "i-4", "LifecycleState": "Standby"}]}

    class NoInstances:  # launch times and tags, as EC2 would give them
        def get_paginator(self, _):
            return self

        def paginate(self, InstanceIds):
            return [{"Reservations": [{"Instances": [
                {"InstanceId": i, "LaunchTime": datetime.fromtimestamp(1000, UTC)}
                for i in InstanceIds]}]}]

    nodes = scaler.fleet_nodes(group, {"Instances": []}, NoInstances(), now=1300)
    assert [(n.name, n.state.value, n.since_s) for n in nodes] == [
        ("i-1/0", "ready", 300), ("i-1/1", "ready", 300), ("i-2", "booting", 300),
        ("i-3", "draining", 300)]


def test_settings_survive_the_environment_round_trip():
    policy = replace(settings().policy, fixed_size=None, max_step=3)
    assert PolicySettings.from_json(json.loads(json.dumps(policy.to_json()))) == policy


def test_before_any_queue_a_node_runs_what_vllm_is_started_with(aws):
    aws.spot_group(desired=2, max_size=12)
    aws.on_demand_group(desired=0)
    # 40 running on 2 nodes for 3 minutes, no queue yet, so no UnitConcurrency published.
    aws.publish(180, FleetSample(waiting=0, running=40, ready_capacity=2))

    unknown = aws.run()
    assert aws.desired() == (2, 0) and unknown["outcome"] == "unchanged"

    # Started with 32 slots a node: 40 running need 40 / (32 at 50 %) = 3 nodes.
    started = aws.run(replace(settings(), node_concurrency=32.0))
    assert aws.desired() == (3, 0)
    assert "40 running for 60 s" in started["reason"] and "+1" in started["reason"]


def test_a_measured_concurrency_wins_over_the_started_one(aws):
    aws.spot_group(desired=2, max_size=12)
    aws.on_demand_group(desired=0)
    # A queue showed a node full at 40 (its KV cache, say): 40 running fit in 2 nodes at 50 %.
    aws.publish(180, FleetSample(waiting=0, running=40, ready_capacity=2, unit_concurrency=40))

    record = aws.run(replace(settings(), node_concurrency=32.0))

    assert aws.desired() == (2, 0) and record["outcome"] == "unchanged"


@pytest.mark.parametrize(("value", "expected"), [("32", 32.0), ("12.5", 12.5), ("", None),
                                                 (None, None)])
def test_the_started_concurrency_comes_from_the_environment_when_pulumi_knows_it(value,
                                                                                 expected):
    env = {scaler.STACK_ENV: STACK, scaler.SPOT_GROUP_ENV: SPOT_GROUP,
           scaler.ON_DEMAND_GROUP_ENV: ON_DEMAND_GROUP, scaler.PERIOD_ENV: str(PERIOD_S),
           scaler.POLICY_ENV: json.dumps(settings().policy.to_json()),
           scaler.STATE_PARAMETER_ENV: PARAMETER}
    if value is not None:
        env[scaler.NODE_CONCURRENCY_ENV] = value
    assert Settings.from_env(env).node_concurrency == expected
