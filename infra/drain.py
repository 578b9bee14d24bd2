"""The SpotDrain component: the Lambda that drains a GPU node AWS is about to take back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
from common import STACK_TAG, read_fleet
from lambdas import packaged_function, resize_groups, triggered_by_rule

from llmfleet.autoscale.drain import (
    INTERRUPTION,
    ON_DEMAND_GROUP_ENV,
    REBALANCE,
    SPOT_GROUP_ENV,
    STACK_ENV,
)
from llmfleet.edge.members import DRAINING_TAG

HANDLER = "llmfleet.autoscale.drain.handler"
# Drains are rare; a month of them covers looking back over a billing period.
LOG_RETENTION_DAYS = 30
# The events it handles, by the label in their rule's name.
EVENTS = {"interruption": INTERRUPTION, "rebalance": REBALANCE}


@dataclass(frozen=True)
class SpotDrainArgs:
    stack: str
    spot_group_name: pulumi.Input[str]
    spot_group_arn: pulumi.Input[str]
    on_demand_group_name: pulumi.Input[str]
    on_demand_group_arn: pulumi.Input[str]
    tags: dict[str, str]


class SpotDrain(pulumi.ComponentResource):
    """A Lambda function running `llmfleet.autoscale.drain` on two EventBridge rules, one for
    `EC2 Spot Instance Interruption Warning` and one for `EC2 Instance Rebalance
    Recommendation`, with its log group (retention `LOG_RETENTION_DAYS`).

    EC2 sends these events for every spot instance of the account and region, so the handler
    acts on this stack's instances only, and its role can do no more: describe instances and
    groups (IAM scopes neither), tag `llmfleet:draining` onto instances tagged with this stack,
    set the desired capacity of this stack's two GPU groups, and write its own log group.

    Outputs: `function_name`, `log_group_name`.
    """

    function_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: SpotDrainArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:SpotDrain", name, None, opts)
        packaged = packaged_function(
            name,
            parent=self,
            handler=HANDLER,
            description=f"llmfleet: drain {args.stack}'s spot nodes AWS is about to take back",
            environment={STACK_ENV: args.stack, SPOT_GROUP_ENV: args.spot_group_name,
                         ON_DEMAND_GROUP_ENV: args.on_demand_group_name},
            statements=lambda account: pulumi.Output.all(
                account.partition, account.region, account.account_id,
                args.spot_group_arn, args.on_demand_group_arn,
            ).apply(lambda parts: _drain_statements(*parts, stack=args.stack)),
            log_retention_days=LOG_RETENTION_DAYS,
            timeout_s=30,
            tags=args.tags,
        )
        function = packaged.function
        for label, detail_type in EVENTS.items():
            triggered_by_rule(
                f"{name}-{label}", function, parent=self,
                description=f"llmfleet: {detail_type} to {args.stack}'s drain Lambda",
                event_pattern=json.dumps({"source": ["aws.ec2"], "detail-type": [detail_type]}),
                tags=args.tags)

        self.function_name = function.name
        self.log_group_name = packaged.logs.name
        self.register_outputs(
            {"function_name": self.function_name, "log_group_name": self.log_group_name}
        )


def _drain_statements(partition: str, region: str, account_id: str, spot_group_arn: str,
                      on_demand_group_arn: str, *, stack: str) -> list[dict[str, Any]]:
    return [
        read_fleet("ReadInstancesAndGroups"),
        {
            "Sid": "TagThisStacksInstancesDraining",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": f"arn:{partition}:ec2:{region}:{account_id}:instance/*",
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{STACK_TAG}": stack},
                # The draining tag and no other: it cannot move an instance to another stack.
                "ForAllValues:StringEquals": {"aws:TagKeys": [DRAINING_TAG]},
            },
        },
        resize_groups(spot_group_arn, on_demand_group_arn),
    ]
