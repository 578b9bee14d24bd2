"""The Deployment component: one per stack, the root every llmfleet resource hangs from."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from common import TAG_PREFIX, name_stem
from container_images import NodeImages, NodeImagesArgs
from cost_controls import CostControls, CostControlsArgs
from drain import SpotDrain, SpotDrainArgs
from edge import Edge, EdgeArgs
from gpu_fleet import GpuFleet, GpuFleetArgs
from monitor import Monitor, MonitorArgs
from network import Network, NetworkArgs
from scaler import Scaler, ScalerArgs
from security import SecurityGroups, SecurityGroupsArgs

from llmfleet.config import FleetConfig


@dataclass(frozen=True)
class DeploymentArgs:
    """A Deployment is built from the stack's validated config and nothing else."""

    config: FleetConfig


def stack_tags(config: FleetConfig, stack: str) -> dict[str, str]:
    """The tags every resource of this stack carries, so cost reports and discovery find it."""
    return {
        f"{TAG_PREFIX}client": config.client,
        f"{TAG_PREFIX}environment": config.environment,
        f"{TAG_PREFIX}stack": stack,
        "managed-by": "pulumi",
    }


class Deployment(pulumi.ComponentResource):
    """One client environment: Network, SecurityGroups, NodeImages, GpuFleet, Edge, SpotDrain,
    Scaler and CostControls as children, named after `name` (shortened by `name_stem` when it
    is long).

    Outputs: `client`, `environment`, `model` (the name clients send), `strategy` (edge load
    balancing) and `tags`, plain values from config known at preview; and `endpoint` (the
    OpenAI base URL), `spot_group`, `on_demand_group`, `edge_group`, `vpc_id`,
    `drain_log_group`, `scaler_log_group` and `budget_name` (None without a budget) from AWS.
    """

    client: str
    environment: str
    model: str
    strategy: str
    tags: dict[str, str]
    endpoint: pulumi.Output[str]
    spot_group: pulumi.Output[str]
    on_demand_group: pulumi.Output[str]
    edge_group: pulumi.Output[str]
    vpc_id: pulumi.Output[str]
    drain_log_group: pulumi.Output[str]
    scaler_log_group: pulumi.Output[str]
    budget_name: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: DeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:Deployment", name, None, opts)
        config = args.config
        self.client = config.client
        self.environment = config.environment
        self.model = config.model.public_name
        self.strategy = config.load_balancing.strategy.value
        # The Pulumi stack name, not config.stack_name: it is unique per project even when
        # two stacks share a client and environment, so tag lookups never mix them up.
        stack = pulumi.get_stack()
        self.tags = stack_tags(config, stack)
        child = pulumi.ResourceOptions(parent=self)
        stem = name_stem(name)

        network = Network(f"{stem}-net", NetworkArgs(spec=config.network, tags=self.tags),
                          opts=child)
        groups = SecurityGroups(
            f"{stem}-sg",
            SecurityGroupsArgs(vpc_id=network.vpc_id, vllm_port=config.gpu_node.vllm_port,
                               edge_cidrs=config.edge.allowed_cidrs, tags=self.tags),
            opts=child,
        )
        images = NodeImages(f"{stem}-images",
                            NodeImagesArgs(config=config, stack=stack, tags=self.tags), opts=child)
        fleet = GpuFleet(
            f"{stem}-gpu",
            GpuFleetArgs(config=config, stack=stack, subnet_ids=network.node_subnet_ids,
                         security_group_id=groups.gpu_id, public_address=network.nodes_public,
                         images=images, tags=self.tags),
            opts=child,
        )
        edge = Edge(
            f"{stem}-edge",
            EdgeArgs(config=config, stack=stack, subnet_ids=network.public_subnet_ids,
                     security_group_id=groups.edge_id, spot_group_name=fleet.spot_group_name,
                     on_demand_group_name=fleet.on_demand_group_name, tags=self.tags),
            opts=child,
        )
        drain = SpotDrain(
            f"{stem}-drain",
            SpotDrainArgs(stack=stack, spot_group_name=fleet.spot_group_name,
                          spot_group_arn=fleet.spot_group_arn,
                          on_demand_group_name=fleet.on_demand_group_name,
                          on_demand_group_arn=fleet.on_demand_group_arn, tags=self.tags),
            opts=child,
        )
        scaler = Scaler(
            f"{stem}-scaler",
            ScalerArgs(config=config, stack=stack, spot_group_name=fleet.spot_group_name,
                       spot_group_arn=fleet.spot_group_arn,
                       on_demand_group_name=fleet.on_demand_group_name,
                       on_demand_group_arn=fleet.on_demand_group_arn, tags=self.tags),
            opts=child,
        )
        costs = CostControls(
            f"{stem}-cost",
            CostControlsArgs(config=config, stack=stack, spot_group_name=fleet.spot_group_name,
                             on_demand_group_name=fleet.on_demand_group_name, tags=self.tags),
            opts=child,
        )
        monitor = None
        if config.monitor.enabled:
            monitor = Monitor(
                f"{stem}-monitor",
                MonitorArgs(config=config, stack=stack, subnet_ids=network.node_subnet_ids,
                            security_group_id=groups.monitor_id,
                            public_address=network.nodes_public, tags=self.tags),
                opts=child,
            )
        if not config.edge.allowed_cidrs:
            pulumi.log.warn(
                "llmfleet:edge.allowed_cidrs is empty: the endpoint accepts no traffic. "
                "List the client networks (or 0.0.0.0/0 for a public API).",
                resource=self,
            )

        self.endpoint = edge.endpoint
        self.spot_group = fleet.spot_group_name
        self.on_demand_group = fleet.on_demand_group_name
        self.edge_group = edge.group_name
        self.vpc_id = network.vpc_id
        self.drain_log_group = drain.log_group_name
        self.scaler_log_group = scaler.log_group_name
        self.monitor_instance = monitor.instance_id if monitor else None
        self.monitor_port_forwards = monitor.port_forward_commands if monitor else None
        self.grafana_password_command = monitor.grafana_password_command if monitor else None
        self.budget_name = costs.budget_name
        self.register_outputs(
            {
                "client": self.client,
                "environment": self.environment,
                "model": self.model,
                "strategy": self.strategy,
                "tags": self.tags,
                "endpoint": self.endpoint,
                "spot_group": self.spot_group,
                "on_demand_group": self.on_demand_group,
                "edge_group": self.edge_group,
                "vpc_id": self.vpc_id,
                "drain_log_group": self.drain_log_group,
                "scaler_log_group": self.scaler_log_group,
                "monitor_instance": self.monitor_instance,
                "monitor_port_forwards": self.monitor_port_forwards,
                "grafana_password_command": self.grafana_password_command,
                "budget_name": self.budget_name,
            }
        )
