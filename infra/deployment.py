"""The Deployment component: one per stack, the root every llmfleet resource will hang from."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from llmfleet.config import FleetConfig

# Keys with ':' are valid AWS tag keys (EC2, Auto Scaling, IAM, Lambda, instance metadata);
# only an 'aws:' prefix is reserved. Prometheus EC2 discovery sees `llmfleet:client` as the
# label `__meta_ec2_tag_llmfleet_client`.
TAG_PREFIX = "llmfleet:"


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
    """One client environment. Creates no AWS resources yet; holds the names and tags.

    Outputs: `client`, `environment`, `model` (the name clients send), `strategy` (edge load
    balancing) and `tags`. All come from config, so they are plain values known at preview,
    and the components to come can merge `tags` into their own without an `apply`.
    """

    client: str
    environment: str
    model: str
    strategy: str
    tags: dict[str, str]

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
        self.tags = stack_tags(config, pulumi.get_stack())
        self.register_outputs(
            {
                "client": self.client,
                "environment": self.environment,
                "model": self.model,
                "strategy": self.strategy,
                "tags": self.tags,
            }
        )
