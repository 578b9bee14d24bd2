"""The CostControls component: off-hours for the GPU groups and a budget on the stack's tag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
from common import STACK_TAG, Account, policy_document
from lambdas import packaged_function

from llmfleet.config import FleetConfig
from llmfleet.observability import budget_slack

STOP_ACTION = "llmfleet-off-hours-stop"
START_ACTION = "llmfleet-off-hours-start"


@dataclass(frozen=True)
class CostControlsArgs:
    config: FleetConfig
    stack: str
    spot_group_name: pulumi.Input[str]
    on_demand_group_name: pulumi.Input[str]
    tags: dict[str, str]


class CostControls(pulumi.ComponentResource):
    """What `off_hours` and `budget` ask for; nothing when neither is set.

    - off-hours: two scheduled actions on each GPU group, in `off_hours.time_zone`. At `stop`
      the group's minimum, maximum and desired capacity go to 0 (its nodes drain through the
      terminating hook); at `start` the configured bounds come back, at the minimum. The scaler
      keeps within a group's bounds, so it does not undo a stop. The edge stays up (it answers
      502 while no node serves).
    - budget: an AWS Budget of `budget.monthly_usd` a month over the costs tagged
      `llmfleet:stack=<stack>` (the tag must be activated as a cost-allocation tag, once per
      account: docs/deploy.md), e-mailing `budget.emails` when actual spend passes each of
      `budget.thresholds_percent`, and when the month's forecast passes 100 %. With
      `budget.slack`, the same notifications also go to an SNS topic of the stack's, which
      only AWS Budgets of this account may publish to, and a Lambda subscribed to it posts each
      to the Slack webhook in `monitor.slack_webhook_parameter` (that parameter only, read at
      its first message).

    Outputs: `budget_name` (None without a budget).
    """

    budget_name: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: CostControlsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:CostControls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config
        off = config.off_hours
        if off.enabled:
            groups = {
                "spot": (args.spot_group_name, config.fleet.min_size, config.fleet.max_size),
                "ondemand": (args.on_demand_group_name, config.on_demand.min_size,
                             config.on_demand.max_size),
            }
            for label, (group, low, high) in groups.items():
                aws.autoscaling.Schedule(
                    f"{name}-{label}-stop", autoscaling_group_name=group,
                    scheduled_action_name=STOP_ACTION, recurrence=off.stop,
                    time_zone=off.time_zone, min_size=0, max_size=0, desired_capacity=0,
                    opts=child)
                aws.autoscaling.Schedule(
                    f"{name}-{label}-start", autoscaling_group_name=group,
                    scheduled_action_name=START_ACTION, recurrence=off.start,
                    time_zone=off.time_zone, min_size=low, max_size=high,
                    desired_capacity=low, opts=child)

        budget = None
        topic_arns: list[pulumi.Output[str]] = []
        if config.budget.monthly_usd is not None and config.budget.slack:
            topic_arns.append(self._slack(name, config, args))
        if config.budget.monthly_usd is not None:
            budget = aws.budgets.Budget(
                f"{name}-budget",
                name=f"llmfleet-{args.stack}",
                budget_type="COST",
                time_unit="MONTHLY",
                limit_amount=f"{config.budget.monthly_usd:.2f}",
                limit_unit="USD",
                # A user-defined cost-allocation tag reads "user:<key>$<value>" here.
                cost_filters=[{"name": "TagKeyValue",
                               "values": [f"user:{STACK_TAG}${args.stack}"]}],
                notifications=budget_notifications(config, topic_arns),
                tags=args.tags,
                opts=child,
            )
        self.budget_name = budget.name if budget is not None else pulumi.Output.from_input(None)
        self.register_outputs({"budget_name": self.budget_name})


    def _slack(self, name: str, config: FleetConfig, args: CostControlsArgs
               ) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        account = Account.current(self)
        topic = aws.sns.Topic(f"{name}-budget-topic", tags=args.tags, opts=child)
        aws.sns.TopicPolicy(
            f"{name}-budget-topic",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, account.account_id).apply(
                lambda parts: policy_document({
                    "Sid": "ThisAccountsBudgetsOnly",
                    "Effect": "Allow",
                    "Principal": {"Service": "budgets.amazonaws.com"},
                    "Action": "SNS:Publish",
                    "Resource": parts[0],
                    "Condition": {"StringEquals": {"aws:SourceAccount": parts[1]}},
                })),
            opts=child,
        )
        parameter = config.monitor.slack_webhook_parameter
        assert parameter is not None  # FleetConfig refuses budget.slack without it
        poster = packaged_function(
            f"{name}-budget-slack",
            parent=self,
            handler="llmfleet.observability.budget_slack.handler",
            description=f"llmfleet: {args.stack}'s budget notifications to Slack",
            environment={budget_slack.PARAMETER_VARIABLE: parameter,
                         budget_slack.STACK_VARIABLE: args.stack},
            statements=lambda account: pulumi.Output.all(
                account.partition, account.region, account.account_id).apply(
                lambda parts: [{
                    "Sid": "ReadTheSlackWebhook",
                    "Effect": "Allow",
                    "Action": "ssm:GetParameter",
                    "Resource": "arn:{}:ssm:{}:{}:parameter".format(*parts) + parameter,
                }]),
            log_retention_days=30,
            timeout_s=30,
            tags=args.tags,
        )
        aws.lambda_.Permission(
            f"{name}-budget-slack", action="lambda:InvokeFunction",
            function=poster.function.name, principal="sns.amazonaws.com",
            source_arn=topic.arn, opts=child)
        aws.sns.TopicSubscription(
            f"{name}-budget-slack", topic=topic.arn, protocol="lambda",
            endpoint=poster.function.arn, opts=child)
        return topic.arn


def budget_notifications(config: FleetConfig, topic_arns: list[pulumi.Output[str]] | None = None
                         ) -> list[dict[str, Any]]:
    """One notification per threshold on actual spend, and one on the forecast at 100 %, to
    the budget's e-mails and (with `budget.slack`) the stack's budget topic."""
    b = config.budget
    wanted = [("ACTUAL", p) for p in b.thresholds_percent]
    if b.forecast:
        wanted.append(("FORECASTED", 100))
    return [{"comparison_operator": "GREATER_THAN", "notification_type": kind,
             "threshold": float(percent), "threshold_type": "PERCENTAGE",
             "subscriber_email_addresses": list(b.emails),
             "subscriber_sns_topic_arns": list(topic_arns or [])} for kind, percent in wanted]
