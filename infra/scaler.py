"""The Scaler component: the Lambda that sizes the GPU groups once a minute with the policy."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import pulumi
import pulumi_aws as aws
from common import read_fleet
from lambdas import packaged_function, resize_groups, triggered_by_rule

from llmfleet.autoscale.cloudwatch import period_for
from llmfleet.autoscale.policy import PolicySettings
from llmfleet.autoscale.scaler import (
    NODE_CONCURRENCY_ENV,
    ON_DEMAND_GROUP_ENV,
    PERIOD_ENV,
    POLICY_ENV,
    SPOT_GROUP_ENV,
    STACK_ENV,
    STATE_PARAMETER_ENV,
)
from llmfleet.config import FleetConfig
from llmfleet.local.simulator.capacity import fleet_concurrency

HANDLER = "llmfleet.autoscale.scaler.handler"
# A run a minute: a week of them is enough to see how a surge was met.
LOG_RETENTION_DAYS = 7
# A run takes a few API calls; it must end before the next one starts.
TIMEOUT_S = 50


@dataclass(frozen=True)
class ScalerArgs:
    config: FleetConfig
    stack: str
    spot_group_name: pulumi.Input[str]
    spot_group_arn: pulumi.Input[str]
    on_demand_group_name: pulumi.Input[str]
    on_demand_group_arn: pulumi.Input[str]
    tags: dict[str, str]


def state_parameter(stack: str) -> str:
    """The SSM parameter holding what the scaler remembers between runs (when it last scaled)."""
    return f"/llmfleet/{stack}/scaler-state"


def schedule(interval_s: float) -> str:
    """`autoscaling.interval_s` as an EventBridge rate, in whole minutes (at least one)."""
    minutes = max(1, math.ceil(interval_s / 60))
    return "rate(1 minute)" if minutes == 1 else f"rate({minutes} minutes)"


def scaler_settings(config: FleetConfig) -> PolicySettings:
    """The policy's settings on AWS. The primary group is the policy's spot group whether it
    buys spot or on-demand (`fleet.spot`); the fallback group stands in for what it cannot
    launch."""
    return replace(PolicySettings.of(config), spot=True)


def node_concurrency_env(config: FleetConfig) -> dict[str, str]:
    """What a capacity unit is started to run at once, for the scaler's source to start with
    until a queue measures it: none when neither `model.extra_args` nor the instance family
    says."""
    concurrency = fleet_concurrency(config)
    return {} if concurrency is None else {NODE_CONCURRENCY_ENV: f"{concurrency:g}"}


class Scaler(pulumi.ComponentResource):
    """A Lambda function running `llmfleet.autoscale.scaler` on an EventBridge schedule
    (`autoscaling.interval_s`, at least a minute), an SSM parameter with what it remembers,
    and its log group (retention `LOG_RETENTION_DAYS`).

    Its role may: describe groups and instances (IAM scopes neither), read metrics
    (GetMetricData takes no resource either), set the desired capacity of this stack's two GPU
    groups, read and write its own parameter, and write its own log group.

    Pulumi sets the groups' desired capacity only when it creates them; from then on it is the
    scaler's (the groups ignore changes to it).

    Outputs: `function_name`, `log_group_name`.
    """

    function_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ScalerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:Scaler", name, None, opts)
        config = args.config
        parameter = aws.ssm.Parameter(
            f"{name}-state",
            name=state_parameter(args.stack),
            type="String",
            # Times, no secret: `insecure_value` keeps it readable in Pulumi's state and diffs.
            insecure_value="{}",
            description=f"llmfleet: when {args.stack}'s scaler last scaled out and in",
            tags=args.tags,
            # The scaler writes it; Pulumi only creates it.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["insecure_value"]),
        )
        packaged = packaged_function(
            name,
            parent=self,
            handler=HANDLER,
            description=f"llmfleet: size {args.stack}'s GPU groups with the "
                        f"{config.autoscaling.policy} policy",
            environment={
                STACK_ENV: args.stack,
                SPOT_GROUP_ENV: args.spot_group_name,
                ON_DEMAND_GROUP_ENV: args.on_demand_group_name,
                POLICY_ENV: json.dumps(scaler_settings(config).to_json(), sort_keys=True),
                PERIOD_ENV: str(period_for(config.edge.sync_interval_s)),
                STATE_PARAMETER_ENV: parameter.name,
                **node_concurrency_env(config),
            },
            statements=lambda account: pulumi.Output.all(
                account.partition, account.region, account.account_id,
                args.spot_group_arn, args.on_demand_group_arn,
            ).apply(lambda parts: _scaler_statements(*parts, parameter=state_parameter(
                args.stack))),
            log_retention_days=LOG_RETENTION_DAYS,
            timeout_s=TIMEOUT_S,
            tags=args.tags,
        )
        function = packaged.function
        triggered_by_rule(f"{name}-schedule", function, parent=self,
                          description=f"llmfleet: run {args.stack}'s scaler",
                          schedule_expression=schedule(config.autoscaling.interval_s),
                          tags=args.tags)

        self.function_name = function.name
        self.log_group_name = packaged.logs.name
        self.register_outputs(
            {"function_name": self.function_name, "log_group_name": self.log_group_name}
        )


def _scaler_statements(partition: str, region: str, account_id: str, spot_group_arn: str,
                       on_demand_group_arn: str, *, parameter: str) -> list[dict[str, Any]]:
    return [
        read_fleet("ReadInstancesAndGroups"),
        {
            "Sid": "ReadTheFleetsLoad",
            "Effect": "Allow",
            "Action": "cloudwatch:GetMetricData",
            "Resource": "*",
        },
        resize_groups(spot_group_arn, on_demand_group_arn),
        {
            "Sid": "KeepItsState",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:PutParameter"],
            "Resource": f"arn:{partition}:ssm:{region}:{account_id}:parameter{parameter}",
        },
    ]
