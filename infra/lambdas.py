"""What each of the stack's Lambda functions has: its code from this repository, a role only
Lambda can assume, the permissions it needs and its own log group with a retention."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
from common import Account, assumed_by, policy_document
from edge import bundle_files

from llmfleet.paths import repo_root

# The handlers use the standard library, the runtime's boto3 and this package's plain modules.
RUNTIME = "python3.12"


@dataclass(frozen=True)
class PackagedFunction:
    function: aws.lambda_.Function
    logs: aws.cloudwatch.LogGroup


def packaged_function(
    name: str,
    *,
    parent: pulumi.Resource,
    handler: str,
    description: str,
    environment: Mapping[str, pulumi.Input[str]],
    statements: Callable[[Account], pulumi.Output[list[dict[str, Any]]]],
    log_retention_days: int,
    timeout_s: int,
    tags: dict[str, str],
) -> PackagedFunction:
    """A function running `handler` from this repository's runtime packages, allowed
    `statements` (made from the account's partition, region and id) and writing its own log
    group, and nothing else."""
    child = pulumi.ResourceOptions(parent=parent)
    account = Account.current(parent)
    logs = aws.cloudwatch.LogGroup(f"{name}-logs", retention_in_days=log_retention_days,
                                   tags=tags, opts=child)
    role = aws.iam.Role(f"{name}-role", assume_role_policy=assumed_by("lambda.amazonaws.com"),
                        tags=tags, opts=child)
    document = pulumi.Output.all(
        statements(account), account.partition, account.region, account.account_id, logs.name,
    ).apply(lambda parts: policy_document(*parts[0], _write_logs(*parts[1:])))
    policy = aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=document, opts=child)
    function = aws.lambda_.Function(
        name,
        description=description,
        runtime=RUNTIME,
        architectures=["arm64"],
        handler=handler,
        code=handler_archive(repo_root()),
        role=role.arn,
        timeout=timeout_s,
        environment={"variables": dict(environment)},
        # Our log group, so its retention applies and Lambda never makes one without.
        logging_config={"log_format": "Text", "log_group": logs.name},
        tags=tags,
        # Its first event may come at once: the role must already allow what it does.
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[policy]),
    )
    return PackagedFunction(function, logs)


def triggered_by_rule(name: str, function: aws.lambda_.Function, *, parent: pulumi.Resource,
                      description: str, tags: dict[str, str],
                      event_pattern: str | None = None,
                      schedule_expression: str | None = None) -> aws.cloudwatch.EventRule:
    """An EventBridge rule (an event pattern or a schedule) that invokes `function`, and the
    permission for EventBridge to do so from that rule only."""
    child = pulumi.ResourceOptions(parent=parent)
    rule = aws.cloudwatch.EventRule(name, description=description, event_pattern=event_pattern,
                                    schedule_expression=schedule_expression, tags=tags,
                                    opts=child)
    aws.cloudwatch.EventTarget(name, rule=rule.name, arn=function.arn, opts=child)
    aws.lambda_.Permission(name, action="lambda:InvokeFunction", function=function.name,
                           principal="events.amazonaws.com", source_arn=rule.arn, opts=child)
    return rule


def resize_groups(spot_group_arn: str, on_demand_group_arn: str) -> dict[str, Any]:
    """Setting the desired capacity of this stack's two GPU groups, and of no other."""
    return {
        "Sid": "ResizeThisStacksGpuGroups",
        "Effect": "Allow",
        "Action": "autoscaling:SetDesiredCapacity",
        "Resource": [spot_group_arn, on_demand_group_arn],
    }


def _write_logs(partition: str, region: str, account_id: str, log_group: str) -> dict[str, Any]:
    return {
        "Sid": "WriteItsLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": f"arn:{partition}:logs:{region}:{account_id}:log-group:{log_group}:*",
    }


def handler_archive(root: Path) -> pulumi.AssetArchive:
    """A function's code: the runtime packages the edge installs (`bundle_files`), laid out as
    Lambda imports them, `llmfleet/...` at the top of the zip."""
    source = root / "src"
    return pulumi.AssetArchive({
        path.relative_to(source).as_posix(): pulumi.FileAsset(str(path))
        for path in bundle_files(root) if source in path.parents
    })
