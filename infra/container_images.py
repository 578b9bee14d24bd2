"""The NodeImages component: the containers a GPU node runs, pinned by digest and pulled
through the stack's own ECR pull-through cache where ECR can cache their registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker
from common import Account, assumed_by, policy_document

from llmfleet.config import FleetConfig, ImageReference
from llmfleet.config.images import CACHEABLE_REGISTRIES, cache_prefix

# What a node pulls from the cache: the usual ECR pull, and on a first pull of an image ECR
# has not cached yet, the right to have it fetched upstream into a new repository.
PULL_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchImportUpstreamImage",
    "ecr:CreateRepository",
]


@dataclass(frozen=True)
class NodeImagesArgs:
    config: FleetConfig
    stack: str
    tags: dict[str, str]


def node_image_references(config: FleetConfig) -> dict[str, ImageReference]:
    """The containers every GPU node runs, by the name the node's user data uses."""
    return {
        "vllm": ImageReference.parse(config.model.vllm_image),
        "dcgm_exporter": ImageReference.parse(config.gpu_node.dcgm_exporter_image),
        "node_exporter": ImageReference.parse(config.gpu_node.node_exporter_image),
    }


def expire_beyond(kept: int) -> str:
    """An ECR lifecycle policy keeping the newest `kept` images of a repository."""
    return json.dumps({"rules": [{
        "rulePriority": 1,
        "description": f"keep the newest {kept} images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                      "countNumber": kept},
        "action": {"type": "expire"},
    }]})


class NodeImages(pulumi.ComponentResource):
    """Every GPU-node container pinned by digest at `pulumi up` (a tag in config is looked up
    once, in its registry, through pulumi-docker's registry image lookup; a digest is kept as
    given), so every node of a deployment runs the same bytes until the next `pulumi up`.

    For each registry ECR can cache (`images.cache_for`): a pull-through cache rule under
    the stack's own prefix (`<stack>/<registry>`), and a repository creation template for it
    (tags mutable, as the cache needs to follow upstream; the newest `images.keep_last` images
    kept; AES-256 at rest; the stack's tags, so `llmfleet sweep` finds the repositories). ECR
    creates the tagged repositories through a role of the stack's that may only create and tag
    repositories under those prefixes.

    Outputs: `references` (name -> the reference a node pulls: through the cache, else from
    its registry, always by digest), `registry` (the ECR host nodes log in to, or None when
    nothing comes through the cache), `pull_statements` (IAM statements for the node role), and
    `cached`, known from config: whether anything comes through the cache.
    """

    references: pulumi.Output[dict[str, str]]
    cached: bool
    registry: pulumi.Output[str | None]
    pull_statements: pulumi.Output[list[dict[str, Any]]]

    def __init__(
        self, name: str, args: NodeImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:NodeImages", name, None, opts)
        config, images = args.config, args.config.images
        account = Account.current(self)
        wanted = node_image_references(config)
        # Each image's cache (its registry's short name), or None: pulled from the registry.
        cache_of = {name: images.cache_for(ref) for name, ref in wanted.items()}

        kinds = sorted({kind for kind in cache_of.values() if kind is not None})
        prefixes = {kind: cache_prefix(args.stack, kind) for kind in kinds}
        uncached = sorted(f"{n} ({wanted[n].registry})" for n, kind in cache_of.items()
                          if kind is None)
        if uncached and images.pull_through_cache:
            pulumi.log.warn(
                f"{', '.join(uncached)}: pulled by each node from its registry (pinned by "
                "digest): ECR cannot cache it without that registry's credentials "
                "(images.registry_credentials) or at all. Behind one NAT address a scale-out "
                "can meet the registry's anonymous pull limit.", resource=self)

        if kinds:
            self._cache(name, kinds, prefixes, config, args.tags, account)
        host = pulumi.Output.all(account.account_id, account.region).apply(
            lambda parts: f"{parts[0]}.dkr.ecr.{parts[1]}.amazonaws.com")

        pinned: dict[str, pulumi.Output[str]] = {}
        for image_name, ref in wanted.items():
            digest = (pulumi.Output.from_input(ref.digest) if ref.digest else
                      docker.get_registry_image_output(
                          name=ref.upstream, opts=pulumi.InvokeOutputOptions(parent=self),
                      ).sha256_digest)
            kind = cache_of[image_name]
            pinned[image_name] = pulumi.Output.all(digest, host).apply(
                lambda parts, ref=ref, kind=kind: ref.pinned(
                    parts[0], via=f"{parts[1]}/{prefixes[kind]}" if kind else None))

        self.references = pulumi.Output.all(**pinned)
        self.cached = bool(kinds)
        self.registry = host if kinds else pulumi.Output.from_input(None)
        self.pull_statements = pulumi.Output.all(
            account.partition, account.region, account.account_id,
        ).apply(lambda parts: _pull_statements(*parts, prefixes=list(prefixes.values())))
        self.register_outputs({"references": self.references, "registry": self.registry})

    def _cache(self, name: str, kinds: list[str], prefixes: dict[str, str],
               config: FleetConfig, tags: dict[str, str], account: Account) -> None:
        child = pulumi.ResourceOptions(parent=self)
        upstream = {kind: host for host, (kind, _) in CACHEABLE_REGISTRIES.items()}
        role = aws.iam.Role(f"{name}-ecr-role", assume_role_policy=assumed_by("ecr.amazonaws.com"),
                            tags=tags, opts=child)
        aws.iam.RolePolicy(
            f"{name}-ecr-create",
            role=role.id,
            policy=pulumi.Output.all(account.partition, account.region, account.account_id).apply(
                lambda parts: policy_document({
                    "Sid": "CreateTheStacksCachedRepositories",
                    "Effect": "Allow",
                    "Action": ["ecr:CreateRepository", "ecr:TagResource"],
                    "Resource": [
                        "arn:{}:ecr:{}:{}:repository/".format(*parts) + f"{prefix}/*"
                        for prefix in prefixes.values()],
                })),
            opts=child,
        )
        for kind in kinds:
            host = upstream[kind]
            credential = config.images.registry_credentials.get(host)
            template = aws.ecr.RepositoryCreationTemplate(
                f"{name}-{kind}",
                prefix=prefixes[kind],
                description=f"llmfleet: {host} cached for {tags.get('llmfleet:stack', name)}",
                applied_fors=["PULL_THROUGH_CACHE"],
                image_tag_mutability="MUTABLE",
                lifecycle_policy=expire_beyond(config.images.keep_last),
                encryption_configurations=[{"encryption_type": "AES256"}],
                resource_tags=tags,
                custom_role_arn=role.arn,
                opts=child,
            )
            aws.ecr.PullThroughCacheRule(
                f"{name}-{kind}",
                ecr_repository_prefix=prefixes[kind],
                upstream_registry_url=host,
                credential_arn=credential,
                # The template must be there before the first pull creates a repository.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[template]),
            )


def _pull_statements(partition: str, region: str, account_id: str, *,
                     prefixes: list[str]) -> list[dict[str, Any]]:
    if not prefixes:
        return []
    return [
        {
            # A registry login token: the action takes no resource.
            "Sid": "LogInToTheRegistry",
            "Effect": "Allow",
            "Action": "ecr:GetAuthorizationToken",
            "Resource": "*",
        },
        {
            "Sid": "PullTheStacksCachedImages",
            "Effect": "Allow",
            "Action": PULL_ACTIONS,
            "Resource": [f"arn:{partition}:ecr:{region}:{account_id}:repository/{prefix}/*"
                         for prefix in prefixes],
        },
    ]
