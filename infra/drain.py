"""The SpotDrain component: the Lambda that drains a GPU node AWS is about to take back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
from common import STACK_TAG, Account, assumed_by, policy_document, read_fleet
from edge import bundle_files

from llmfleet.autoscale.drain import (
    INTERRUPTION,
    ON_DEMAND_GROUP_ENV,
    REBALANCE,
    SPOT_GROUP_ENV,
    STACK_ENV,
)
from llmfleet.edge.members import DRAINING_TAG
from llmfleet.paths import repo_root

HANDLER = "llmfleet.autoscale.drain.handler"
# The handler uses the standard library and the runtime's boto3 only.
RUNTIME = "python3.12"
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
        child = pulumi.ResourceOptions(parent=self)
        account = Account.current(self)

        logs = aws.cloudwatch.LogGroup(f"{name}-logs", retention_in_days=LOG_RETENTION_DAYS,
                                       tags=args.tags, opts=child)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=assumed_by("lambda.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.all(
                account.partition, account.region, account.account_id, logs.name,
                args.spot_group_arn, args.on_demand_group_arn,
            ).apply(lambda parts: _drain_policy(*parts, stack=args.stack)),
            opts=child,
        )
        function = aws.lambda_.Function(
            name,
            description=f"llmfleet: drain {args.stack}'s spot nodes AWS is about to take back",
            runtime=RUNTIME,
            architectures=["arm64"],
            handler=HANDLER,
            code=handler_archive(repo_root()),
            role=role.arn,
            timeout=30,
            environment={"variables": {
                STACK_ENV: args.stack,
                SPOT_GROUP_ENV: args.spot_group_name,
                ON_DEMAND_GROUP_ENV: args.on_demand_group_name,
            }},
            # Our log group, so its retention applies and Lambda never makes one without.
            logging_config={"log_format": "Text", "log_group": logs.name},
            tags=args.tags,
            # Its first event may come at once: the role must already allow what it does.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        for label, detail_type in EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{label}",
                description=f"llmfleet: {detail_type} to {args.stack}'s drain Lambda",
                event_pattern=json.dumps({"source": ["aws.ec2"], "detail-type": [detail_type]}),
                tags=args.tags,
                opts=child,
            )
            aws.cloudwatch.EventTarget(f"{name}-{label}", rule=rule.name, arn=function.arn,
                                       opts=child)
            aws.lambda_.Permission(
                f"{name}-{label}", action="lambda:InvokeFunction", function=function.name,
                principal="events.amazonaws.com", source_arn=rule.arn, opts=child)

        self.function_name = function.name
        self.log_group_name = logs.name
        self.register_outputs(
            {"function_name": self.function_name, "log_group_name": self.log_group_name}
        )


def _drain_policy(partition: str, region: str, account_id: str, log_group: str,
                  spot_group_arn: str, on_demand_group_arn: str, *, stack: str) -> str:
    return policy_document(
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
        {
            "Sid": "ResizeThisStacksGpuGroups",
            "Effect": "Allow",
            "Action": "autoscaling:SetDesiredCapacity",
            "Resource": [spot_group_arn, on_demand_group_arn],
        },
        {
            "Sid": "WriteItsLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"arn:{partition}:logs:{region}:{account_id}:log-group:{log_group}:*",
        },
    )


def handler_archive(root: Path) -> pulumi.AssetArchive:
    """The Lambda's code: the runtime packages the edge installs (`bundle_files`), laid out as
    Lambda imports them, `llmfleet/...` at the top of the zip."""
    source = root / "src"
    return pulumi.AssetArchive({
        path.relative_to(source).as_posix(): pulumi.FileAsset(str(path))
        for path in bundle_files(root) if source in path.parents
    })
