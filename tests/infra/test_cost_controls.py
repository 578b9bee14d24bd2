"""The CostControls component: off-hours schedules on both GPU groups that the scaler respects,
and a budget on the stack's cost-allocation tag that e-mails its thresholds."""

from __future__ import annotations

import pytest
from infra_helpers import ACCOUNT_ID, GROUP, REGION, ROLE_POLICY, stack_config, statements
from infra_helpers import stack_config_env as config_of
from parliament import analyze_policy_string

SCHEDULE = "aws:autoscaling/schedule:Schedule"
BUDGET = "aws:budgets/budget:Budget"


def test_the_university_goes_to_zero_at_night_and_at_weekends(program, mocks):
    program.run(config_of("university-prod"), stack="university-prod")
    groups = {g: mocks.outputs[GROUP, f"university-prod-gpu-{g}"]["name"]
              for g in ("spot", "ondemand")}

    schedules = {r.name: r.inputs for r in mocks.of_type(SCHEDULE)}
    assert set(schedules) == {f"university-prod-cost-{g}-{when}"
                              for g in ("spot", "ondemand") for when in ("stop", "start")}
    for group, (low, high) in {"spot": (0, 4), "ondemand": (0, 2)}.items():
        stop = schedules[f"university-prod-cost-{group}-stop"]
        start = schedules[f"university-prod-cost-{group}-start"]
        assert stop == {"autoscalingGroupName": groups[group],
                        "scheduledActionName": "llmfleet-off-hours-stop",
                        "recurrence": "0 23 * * *", "timeZone": "Asia/Karachi",
                        "minSize": 0, "maxSize": 0, "desiredCapacity": 0}
        assert start == {"autoscalingGroupName": groups[group],
                         "scheduledActionName": "llmfleet-off-hours-start",
                         "recurrence": "0 7 * * MON-FRI", "timeZone": "Asia/Karachi",
                         "minSize": low, "maxSize": high, "desiredCapacity": low}


def test_a_stack_without_off_hours_has_no_schedule_and_no_budget(program, mocks):
    exports = program.run(config_of("startup-prod"), stack="startup-prod")

    assert mocks.of_type(SCHEDULE) == [] and mocks.of_type(BUDGET) == []
    assert exports["budget_name"] is None


def test_the_budget_watches_this_stacks_tag_and_mails_each_threshold(program, mocks):
    exports = program.run(config_of("university-prod"), stack="university-prod")

    budget = mocks.one(BUDGET, "university-prod-cost-budget")
    assert {k: budget[k] for k in ("name", "budgetType", "timeUnit", "limitAmount",
                                   "limitUnit")} == {
        "name": "llmfleet-university-prod", "budgetType": "COST", "timeUnit": "MONTHLY",
        "limitAmount": "250.00", "limitUnit": "USD"}
    assert budget["costFilters"] == [{"name": "TagKeyValue",
                                      "values": ["user:llmfleet:stack$university-prod"]}]
    found = {(n["notificationType"], n["threshold"]) for n in budget["notifications"]}
    assert found == {("ACTUAL", 50.0), ("ACTUAL", 80.0), ("ACTUAL", 100.0),
                     ("FORECASTED", 100.0)}
    for notification in budget["notifications"]:
        assert notification["subscriberEmailAddresses"] == ["it-ops@university.example"]
        assert notification["subscriberSnsTopicArns"] == []  # no Slack asked for
        assert (notification["comparisonOperator"], notification["thresholdType"]) == (
            "GREATER_THAN", "PERCENTAGE")
    assert exports["budget_name"] == mocks.outputs[BUDGET, "university-prod-cost-budget"]["name"]
    assert exports["tags"].items() <= budget["tags"].items()


@pytest.mark.parametrize(("settings", "problem"), [
    ({"off_hours": {"stop": "0 22 * * *"}}, "needs both stop and start"),
    ({"off_hours": {"stop": "22:00", "start": "07:00"}}, "cron expression of five fields"),
    ({"off_hours": {"time_zone": "PKT", "stop": "0 22 * * *", "start": "0 7 * * *"}},
     "unknown time zone"),
    ({"budget": {"monthly_usd": 100}}, "needs at least one address"),
    ({"budget": {"monthly_usd": 100, "slack": True}}, "monitor.slack_webhook_parameter"),
    ({"budget": {"monthly_usd": 100, "emails": ["ops"]}}, "not e-mail addresses"),
])
def test_bad_cost_settings_stop_the_run_before_anything_is_made(program, mocks, settings,
                                                                problem):
    with pytest.raises(Exception, match=problem):
        program.run(config_of("example", **settings), stack="example")
    assert mocks.of_type(SCHEDULE) == [] and mocks.of_type(BUDGET) == []


WEBHOOK = "/llmfleet/university-prod/slack-webhook"


def test_with_slack_every_notification_also_goes_to_a_topic_only_budgets_may_publish_to(
        program, mocks):
    raw = stack_config("university-prod")
    env = config_of("university-prod",
                    budget={**raw["llmfleet:budget"], "emails": [], "slack": True},
                    monitor={**(raw.get("llmfleet:monitor") or {}),
                             "slack_webhook_parameter": WEBHOOK})
    program.run(env, stack="university-prod")

    topic_arn = mocks.outputs["aws:sns/topic:Topic", "university-prod-cost-budget-topic"]["arn"]
    budget = mocks.one(BUDGET, "university-prod-cost-budget")
    assert len(budget["notifications"]) == 4
    for notification in budget["notifications"]:
        assert notification["subscriberSnsTopicArns"] == [topic_arn]
        assert notification["subscriberEmailAddresses"] == []
    [publish] = statements(mocks.one("aws:sns/topicPolicy:TopicPolicy",
                                     "university-prod-cost-budget-topic")["policy"])
    assert publish["Principal"] == {"Service": "budgets.amazonaws.com"}
    assert (publish["Action"], publish["Resource"]) == ("SNS:Publish", topic_arn)
    assert publish["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}

    # The poster: subscribed to that topic, invocable by SNS from it only, reading the one
    # webhook parameter and writing its own logs.
    function = mocks.one("aws:lambda/function:Function", "university-prod-cost-budget-slack")
    assert function["handler"] == "llmfleet.observability.budget_slack.handler"
    assert function["environment"]["variables"] == {
        "LLMFLEET_SLACK_WEBHOOK_PARAMETER": WEBHOOK, "LLMFLEET_STACK": "university-prod"}
    function_arn = mocks.outputs["aws:lambda/function:Function",
                                 "university-prod-cost-budget-slack"]["arn"]
    subscription = mocks.one("aws:sns/topicSubscription:TopicSubscription",
                             "university-prod-cost-budget-slack")
    assert subscription == {"topic": topic_arn, "protocol": "lambda", "endpoint": function_arn}
    permission = mocks.one("aws:lambda/permission:Permission", "university-prod-cost-budget-slack")
    assert (permission["principal"], permission["sourceArn"]) == ("sns.amazonaws.com", topic_arn)
    policy = mocks.one(ROLE_POLICY, "university-prod-cost-budget-slack-policy")["policy"]
    read, _logs = statements(policy)
    assert (read["Action"], read["Resource"]) == (
        "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{WEBHOOK}")
    assert analyze_policy_string(policy).findings == []
