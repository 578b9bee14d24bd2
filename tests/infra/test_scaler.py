"""The Scaler component: the scaler Lambda on its schedule, the settings it decides with, what
it remembers, its log group, and a role that can size this stack's two groups only."""

from __future__ import annotations

import json

import pytest
from infra_helpers import ACCOUNT_ID, GROUP, REGION, ROLE_POLICY, import_infra, statements
from infra_helpers import stack_config_env as config_of
from parliament import analyze_policy_string

from llmfleet.autoscale.policy import PolicySettings
from llmfleet.config import from_pulumi_config_env

FUNCTION = "aws:lambda/function:Function"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
PERMISSION = "aws:lambda/permission:Permission"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
PARAMETER = "aws:ssm/parameter:Parameter"
ROLE = "aws:iam/role:Role"


@pytest.fixture
def startup(program, mocks):
    return program.run(config_of("startup-prod"), stack="startup-prod")


def test_the_function_decides_with_the_stacks_policy_settings(startup, mocks):
    function = mocks.one(FUNCTION, "startup-prod-scaler")
    config = from_pulumi_config_env(config_of("startup-prod"), "startup-prod")

    assert function["handler"] == "llmfleet.autoscale.scaler.handler"
    assert function["timeout"] < 60  # done before the next run starts
    variables = function["environment"]["variables"]
    settings = PolicySettings.from_json(json.loads(variables.pop("LLMFLEET_POLICY")))
    assert settings == PolicySettings(**{**PolicySettings.of(config).to_json(), "spot": True})
    assert variables == {
        "LLMFLEET_STACK": "startup-prod",
        "LLMFLEET_SPOT_GROUP": startup["spot_group"],
        "LLMFLEET_ON_DEMAND_GROUP": startup["on_demand_group"],
        "LLMFLEET_METRIC_PERIOD_S": "10",  # the edge publishes every sync pass (10 s)
        "LLMFLEET_STATE_PARAMETER": "/llmfleet/startup-prod/scaler-state",
        # Until a queue measures it: a capacity unit runs 32 at once (g6.xlarge's L4 preset,
        # 64 on weight 1; g5.xlarge's 64 on weight 2), the smallest over the fleet's types.
        "LLMFLEET_NODE_CONCURRENCY": "32",
    }
    assert function["loggingConfig"] == {
        "logFormat": "Text", "logGroup": mocks.ids[LOG_GROUP, "startup-prod-scaler-logs"]}
    assert mocks.one(LOG_GROUP, "startup-prod-scaler-logs")["retentionInDays"] == 7
    assert startup["scaler_log_group"] == mocks.ids[LOG_GROUP, "startup-prod-scaler-logs"]


def test_a_schedule_runs_it_every_minute(startup, mocks):
    function = mocks.outputs[FUNCTION, "startup-prod-scaler"]
    name = "startup-prod-scaler-schedule"

    assert mocks.one(RULE, name)["scheduleExpression"] == "rate(1 minute)"
    assert mocks.one(TARGET, name) == {"rule": mocks.ids[RULE, name], "arn": function["arn"]}
    assert mocks.one(PERMISSION, name) == {
        "action": "lambda:InvokeFunction", "function": function["name"],
        "principal": "events.amazonaws.com", "sourceArn": mocks.outputs[RULE, name]["arn"]}


@pytest.mark.parametrize(("interval_s", "expression"), [
    (1, "rate(1 minute)"), (60, "rate(1 minute)"), (61, "rate(2 minutes)"),
    (300, "rate(5 minutes)")])
def test_the_schedule_is_the_decision_interval_in_whole_minutes(interval_s, expression):
    assert import_infra("scaler").schedule(interval_s) == expression


def test_what_it_remembers_is_its_own_and_pulumi_leaves_it_alone(startup, mocks):
    parameter = mocks.one(PARAMETER, "startup-prod-scaler-state")
    assert (parameter["name"], parameter["type"], parameter["insecureValue"]) == (
        "/llmfleet/startup-prod/scaler-state", "String", "{}")
    assert "insecureValue" in mocks.options[PARAMETER, "startup-prod-scaler-state"].ignore_changes


def test_the_role_may_size_this_stacks_two_groups_and_keep_its_state_only(startup, mocks):
    document = mocks.one(ROLE_POLICY, "startup-prod-scaler-policy")["policy"]
    found = {s["Sid"]: s for s in statements(document)}

    groups = [mocks.outputs[GROUP, f"startup-prod-gpu-{g}"]["arn"] for g in ("spot", "ondemand")]
    assert found["ResizeThisStacksGpuGroups"] == {
        "Sid": "ResizeThisStacksGpuGroups", "Effect": "Allow",
        "Action": "autoscaling:SetDesiredCapacity", "Resource": groups}
    assert found["KeepItsState"]["Action"] == ["ssm:GetParameter", "ssm:PutParameter"]
    assert found["KeepItsState"]["Resource"] == (
        f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/llmfleet/startup-prod/scaler-state")
    assert found["ReadTheFleetsLoad"]["Action"] == "cloudwatch:GetMetricData"
    log_group = mocks.ids[LOG_GROUP, "startup-prod-scaler-logs"]
    assert found["WriteItsLogs"]["Resource"] == (
        f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{log_group}:*")
    assert set(found) == {"ReadInstancesAndGroups", "ReadTheFleetsLoad",
                          "ResizeThisStacksGpuGroups", "KeepItsState", "WriteItsLogs"}
    assert analyze_policy_string(document).findings == []


def test_every_scaler_resource_carries_the_stack_tags(startup, mocks):
    for typ, name in [(FUNCTION, "startup-prod-scaler"), (ROLE, "startup-prod-scaler-role"),
                      (LOG_GROUP, "startup-prod-scaler-logs"),
                      (RULE, "startup-prod-scaler-schedule"),
                      (PARAMETER, "startup-prod-scaler-state")]:
        assert startup["tags"].items() <= mocks.one(typ, name)["tags"].items(), name
