"""The GpuFleet component: vLLM nodes in a spot group and an on-demand fallback group."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from cloud_init import render_gpu_node
from common import (
    CAPACITY_TAG,
    ROLE_TAG,
    Account,
    encrypted_root,
    group_tags,
    imdsv2,
    instance_refresh,
    instance_role,
    launch_tags,
    launch_user_data,
    pinned_ami,
    policy_document,
    primary_interface,
)
from container_images import NodeImages
from lifecycle import group_hooks

from llmfleet.config import FleetConfig


@dataclass(frozen=True)
class GpuFleetArgs:
    config: FleetConfig
    stack: str
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    # Without NAT, nodes need a public address for outbound traffic; their group admits
    # nothing from the internet either way.
    public_address: bool
    images: NodeImages
    tags: dict[str, str]


class GpuFleet(pulumi.ComponentResource):
    """One launch template and two Auto Scaling groups over it.

    - spot group: every `fleet.instance_types` entry with its weight, price-capacity-optimized,
      capacity rebalance on, on-demand base 0 and on-demand above base 0 % (100 % when
      `fleet.spot` is false), sizes from `fleet` in capacity units.
    - on-demand fallback group: `fleet.instance_types[0]` only, `on_demand.min_size` nodes
      always on, and a warm pool of `on_demand.warm_pool` stopped instances that go back to the
      pool on scale-in. Two groups, because AWS refuses a warm pool on a mixed-instances group.

    Nodes boot the Deep Learning Base GPU AMI (from its public SSM parameter) with IMDSv2 only,
    an encrypted gp3 root volume, no key pair, and a role that can use SSM Session Manager,
    read the stack's Hugging Face token parameter, and complete lifecycle hooks and set its
    health in this stack's two groups, nothing else. Both groups hold a node in `Pending:Wait`
    until its vLLM answers and in `Terminating:Wait` until its requests end (`lifecycle`).

    Both groups take their desired capacity from config when they are created; after that it
    belongs to what scales the fleet (the scaler and drain Lambdas), so Pulumi ignores it rather
    than undo their changes on the next `pulumi up`. `pulumi up` does not
    wait for nodes (a spot shortage or a GPU quota of zero leaves a group empty, not the update
    failed), and `pulumi destroy` does not wait for the warm pool's instances to terminate.

    Outputs: `spot_group_name`, `spot_group_arn`, `on_demand_group_name`,
    `on_demand_group_arn`, `role_arn`.
    """

    spot_group_name: pulumi.Output[str]
    spot_group_arn: pulumi.Output[str]
    on_demand_group_name: pulumi.Output[str]
    on_demand_group_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: GpuFleetArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:GpuFleet", name, None, opts)
        config, node = args.config, args.config.gpu_node
        child = pulumi.ResourceOptions(parent=self)
        account = Account.current(self)
        tags = {**args.tags, ROLE_TAG: "gpu-node"}

        role, profile = instance_role(name, tags, self)
        token_parameter = node.token_parameter(args.stack)
        aws.iam.RolePolicy(
            f"{name}-hf-token",
            role=role.id,
            policy=pulumi.Output.all(account.partition, account.region, account.account_id).apply(
                lambda parts: policy_document({
                    "Sid": "ReadTheHuggingFaceToken",
                    "Effect": "Allow",
                    "Action": "ssm:GetParameter",
                    "Resource": "arn:{}:ssm:{}:{}:parameter".format(*parts) + token_parameter,
                })
            ),
            opts=child,
        )

        if args.images.cached:
            aws.iam.RolePolicy(
                f"{name}-images",
                role=role.id,
                policy=args.images.pull_statements.apply(lambda s: policy_document(*s)),
                opts=child,
            )
        user_data = pulumi.Output.all(
            account.region, args.images.references, args.images.registry,
        ).apply(lambda parts: launch_user_data(render_gpu_node(
            config, stack=args.stack, region=parts[0], images=parts[1], registry=parts[2],
        )))
        fallback_type = config.fleet.instance_types[0].type
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            description=f"llmfleet GPU node of {args.stack}",
            image_id=pinned_ami(config, "gpu_node", node.ami_parameter, account, self),
            # The fallback group's type; the spot group overrides it with its list.
            instance_type=fallback_type,
            iam_instance_profile={"arn": profile.arn},
            # Hop limit 1: no container on a node needs the node's role (vLLM gets the HF token
            # in its environment; the lifecycle script runs on the host), so none can reach it.
            metadata_options=imdsv2(hop_limit=1),
            block_device_mappings=encrypted_root(node.root_volume_gib),
            network_interfaces=primary_interface(args.security_group_id, args.public_address),
            user_data=user_data,
            update_default_version=True,
            tag_specifications=launch_tags(tags),
            tags=tags,
            opts=child,
        )
        version = template.latest_version.apply(str)
        # The first health check waits out a cold start, and so does counting a new node's
        # metrics in scaling decisions.
        warm_up = {
            "health_check_type": "EC2",
            "health_check_grace_period": node.cold_start_s,
            "default_instance_warmup": node.cold_start_s,
            # "0": return once the group exists. Waiting would fail `pulumi up` after 10
            # minutes whenever spot capacity or the GPU quota is short, with the group
            # created anyway; its activity history says why nodes do not come.
            "wait_for_capacity_timeout": "0",
            # In service only once vLLM serves; out only once its requests are done.
            "initial_lifecycle_hooks": group_hooks(config),
            # A new AMI pin or user data reaches the running nodes: each is replaced by a new
            # one that is ready first, so the fleet never runs short during the change.
            "instance_refresh": instance_refresh(
                warmup_s=node.cold_start_s, min_healthy_percentage=100,
                max_healthy_percentage=200),
        }
        scaled = pulumi.ResourceOptions(parent=self, ignore_changes=["desired_capacity"])

        fleet = config.fleet
        spot = aws.autoscaling.Group(
            f"{name}-spot",
            min_size=fleet.min_size,
            max_size=fleet.max_size,
            desired_capacity=fleet.desired,
            vpc_zone_identifiers=args.subnet_ids,
            capacity_rebalance=True,
            mixed_instances_policy={
                "instances_distribution": {
                    # Set explicitly: the provider's default is 100 % on-demand.
                    "on_demand_base_capacity": 0,
                    "on_demand_percentage_above_base_capacity": 0 if fleet.spot else 100,
                    "on_demand_allocation_strategy": "lowest-price",
                    "spot_allocation_strategy": "price-capacity-optimized",
                },
                "launch_template": {
                    "launch_template_specification": {
                        "launch_template_id": template.id,
                        "version": version,
                    },
                    "overrides": [
                        {"instance_type": t.type, "weighted_capacity": str(t.weight)}
                        for t in fleet.instance_types
                    ],
                },
            },
            tags=group_tags({**tags, "Name": f"{name}-spot",
                             CAPACITY_TAG: "spot" if fleet.spot else "on-demand"}),
            **warm_up,
            opts=scaled,
        )
        fallback = config.on_demand
        on_demand = aws.autoscaling.Group(
            f"{name}-ondemand",
            min_size=fallback.min_size,
            max_size=fallback.max_size,
            desired_capacity=fallback.min_size,
            vpc_zone_identifiers=args.subnet_ids,
            launch_template={"id": template.id, "version": version},
            # Stopped instances cost only their disks; starting one skips the first boot and
            # keeps what its first launch already downloaded. warm_pool: 0 means no pool.
            warm_pool={
                "pool_state": "Stopped",
                "min_size": fallback.warm_pool,
                # Running plus stopped instances the group keeps ready.
                "max_group_prepared_capacity": fallback.min_size + fallback.warm_pool,
                "instance_reuse_policy": {"reuse_on_scale_in": True},
            } if fallback.warm_pool else None,
            # Without it, deleting the group first waits for every instance in the warm pool
            # to terminate, and `pulumi destroy` can sit on that for a long time.
            force_delete_warm_pool=True,
            tags=group_tags({**tags, "Name": f"{name}-ondemand", CAPACITY_TAG: "on-demand"}),
            **warm_up,
            opts=scaled,
        )

        aws.iam.RolePolicy(
            f"{name}-lifecycle",
            role=role.id,
            policy=pulumi.Output.all(spot.arn, on_demand.arn).apply(
                lambda arns: policy_document(
                    {
                        # Which group a node is in: no resource scoping exists for it.
                        "Sid": "FindItsGroup",
                        "Effect": "Allow",
                        "Action": "autoscaling:DescribeAutoScalingInstances",
                        "Resource": "*",
                    },
                    {
                        "Sid": "JoinLeaveAndReportInThisStacksGroups",
                        "Effect": "Allow",
                        "Action": ["autoscaling:CompleteLifecycleAction",
                                   "autoscaling:SetInstanceHealth"],
                        "Resource": list(arns),
                    },
                )
            ),
            opts=child,
        )

        self.spot_group_name = spot.name
        self.spot_group_arn = spot.arn
        self.on_demand_group_name = on_demand.name
        self.on_demand_group_arn = on_demand.arn
        self.role_arn = role.arn
        self.register_outputs(
            {
                "spot_group_name": self.spot_group_name,
                "spot_group_arn": self.spot_group_arn,
                "on_demand_group_name": self.on_demand_group_name,
                "on_demand_group_arn": self.on_demand_group_arn,
                "role_arn": self.role_arn,
            }
        )
