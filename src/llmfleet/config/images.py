"""Config section `images`: where a stack's machines get their disks and containers from.

- **AMIs pinned by id, per region.** `amis.<region>.<role>` (edge, gpu_node, monitor) fixes the
  image each role launches, so a new node boots what the last one booted. A role without a pin
  resolves its public SSM parameter at `pulumi up` (a warning says so), never at every launch.
  `llmfleet amis STACK_FILE --write` reads the parameters and writes the pins.
- **Containers through the stack's ECR.** A GPU node runs vLLM, the DCGM exporter and the node
  exporter. Each is pinned by digest at `pulumi up`, and pulled through the stack's ECR
  pull-through cache when ECR can cache its registry: quay.io, public.ecr.aws and
  registry.k8s.io without credentials; Docker Hub, ghcr.io and registry.gitlab.com only with a
  Secrets Manager secret of that registry's credentials (ECR requires one). Anything else
  (nvcr.io, or Docker Hub without credentials) is pulled from its registry, by digest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from llmfleet.config.base import Strict

DOCKER_HUB = "registry-1.docker.io"
# Registries ECR's pull-through cache can front, with the short name used in the stack's
# repository prefix, and whether ECR needs the registry's credentials for it.
CACHEABLE_REGISTRIES: dict[str, tuple[str, bool]] = {
    "public.ecr.aws": ("ecr-public", False),
    "quay.io": ("quay", False),
    "registry.k8s.io": ("k8s", False),
    DOCKER_HUB: ("docker-hub", True),
    "ghcr.io": ("github", True),
    "registry.gitlab.com": ("gitlab", True),
}
CREDENTIALED = tuple(host for host, (_, needs) in CACHEABLE_REGISTRIES.items() if needs)
ROLES = ("edge", "gpu_node", "monitor")

AmiId = Annotated[
    str,
    StringConstraints(pattern=r"^ami-[0-9a-f]{8,17}$"),
    Field(description="an AMI id such as ami-0123456789abcdef0"),
]
# ECR requires the pull-through cache's secret to be named ecr-pullthroughcache/...
CacheSecretArn = Annotated[
    str,
    StringConstraints(
        pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:ecr-pullthroughcache/.+$"),
    Field(description="a Secrets Manager secret ARN whose name starts with "
                      "ecr-pullthroughcache/ (ECR requires that prefix)"),
]


def _parses(reference: str) -> str:
    ImageReference.parse(reference)
    return reference


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageReference:
    """A container image reference split as registries see it: `vllm/vllm-openai:v0.11.0` is
    Docker Hub's `vllm/vllm-openai`, tag `v0.11.0`; `redis` is Docker Hub's `library/redis`."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, reference: str) -> ImageReference:
        rest, _, digest = reference.partition("@")
        if digest and not _DIGEST.match(digest):
            raise ValueError(f"{reference!r}: a digest is sha256: and 64 hex digits")
        first, slash, remainder = rest.partition("/")
        # Docker's rule: the first part names a registry only if it looks like a host.
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        if registry == "docker.io":
            registry = DOCKER_HUB
        name, colon, tag = path.rpartition(":")
        if not colon:
            name, tag = path, ""
        if not name or not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", name):
            raise ValueError(
                f"{reference!r}: the repository must be lowercase letters, digits and . _ - /")
        if registry == DOCKER_HUB and "/" not in name:
            name = f"library/{name}"
        if not tag and not digest:
            raise ValueError(
                f"{reference!r} names no tag or digest; name a release (repo:tag) so every "
                "node runs the same image")
        return cls(registry=registry, repository=name, tag=tag or None, digest=digest or None)

    @property
    def upstream(self) -> str:
        """The reference as the registry's own clients write it (tag kept, for lookups)."""
        host = "docker.io" if self.registry == DOCKER_HUB else self.registry
        return f"{host}/{self.repository}" + (f":{self.tag}" if self.tag else "")

    def pinned(self, digest: str, *, via: str | None = None) -> str:
        """`registry/repository@digest`, or through the ECR cache at `via` (its repository
        URL prefix, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/acme-prod/quay)."""
        host = "docker.io" if self.registry == DOCKER_HUB else self.registry
        return f"{via or host}/{self.repository}@{digest}"


# Checked when the config loads, so a bad reference fails there and not on a node.
ContainerImage = Annotated[
    str,
    StringConstraints(max_length=255),
    AfterValidator(_parses),
    Field(description="a container image reference with a tag or digest, such as "
                      "quay.io/org/name:tag"),
]


class ImagesSpec(Strict):
    """Pinned AMIs per region and role, and how GPU nodes pull their containers."""

    amis: dict[str, dict[str, AmiId]] = Field(
        default_factory=dict,
        description="region -> {edge, gpu_node, monitor} -> AMI id (see `llmfleet amis`)")
    pull_through_cache: bool = Field(
        True, description="pull GPU nodes' containers through the stack's ECR cache where ECR "
                          "can cache their registry")
    registry_credentials: dict[str, CacheSecretArn] = Field(
        default_factory=dict,
        description=f"registry ({', '.join(CREDENTIALED)}) -> Secrets Manager secret with its "
                    "credentials, for ECR's cache of that registry")
    keep_last: int = Field(
        3, ge=1, le=1000, description="images kept per cached repository (older ones expire)")

    @field_validator("amis")
    @classmethod
    def _regions_and_roles(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for region, pins in value.items():
            if not _REGION.match(region):
                raise ValueError(f"{region!r} is not an AWS region name such as us-east-1")
            unknown = sorted(set(pins) - set(ROLES))
            if unknown:
                raise ValueError(
                    f"amis.{region} names {unknown}; the roles are {list(ROLES)}")
        return value

    @field_validator("registry_credentials")
    @classmethod
    def _credentialed_registries(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(CREDENTIALED))
        if unknown:
            raise ValueError(
                f"registry_credentials names {unknown}; ECR's cache takes credentials for "
                f"{list(CREDENTIALED)} (Docker Hub is {DOCKER_HUB})")
        return value

    def ami(self, region: str, role: str) -> str | None:
        return self.amis.get(region, {}).get(role)

    def cache_for(self, reference: ImageReference) -> str | None:
        """The cache's short name for this image's registry, or None when the node pulls it
        from the registry itself (cache off, unsupported registry, missing credentials)."""
        if not self.pull_through_cache or reference.registry not in CACHEABLE_REGISTRIES:
            return None
        kind, needs_credentials = CACHEABLE_REGISTRIES[reference.registry]
        if needs_credentials and reference.registry not in self.registry_credentials:
            return None
        return kind


# ECR caps a pull-through cache's repository prefix at 30 characters.
CACHE_PREFIX_MAX = 30


def cache_prefix(stack: str, kind: str) -> str:
    """The stack's ECR repository prefix for one cached registry: `<stack>/<kind>` when that
    fits ECR's rules (lowercase, 30 characters), else the stack's beginning and a hash of it,
    so two stacks in one account never share a cache (or its lifecycle and tags)."""
    slug = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-") or "stack"
    room = CACHE_PREFIX_MAX - len(kind) - 1
    if slug == stack and len(slug) <= room:
        return f"{slug}/{kind}"
    digest = hashlib.sha256(stack.encode()).hexdigest()[:8]
    return f"{slug[:room - len(digest) - 1].strip('-')}-{digest}/{kind}"
