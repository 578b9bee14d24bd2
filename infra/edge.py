"""The Edge component: the public endpoint, an nginx node in a group of one behind an EIP."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pulumi
import pulumi_aws as aws
from cloud_init import BUNDLE_CONSTRAINTS, render_edge
from common import (
    ROLE_TAG,
    STACK_TAG,
    Account,
    assumed_by,
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
    read_fleet,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from llmfleet.autoscale.cloudwatch import NAMESPACE
from llmfleet.config import FleetConfig
from llmfleet.config.aws import TlsMode
from llmfleet.paths import repo_root

# What edge_boot.py needs to fetch the bundle: installed first, on its own.
EDGE_BOOT_REQUIREMENT = "boto3"

BUNDLE_KEY = "llmfleet.zip"
# The role tag of the edge's Redis volume, which its snapshots find it by.
REDIS_VOLUME_ROLE = "edge-redis"


@dataclass(frozen=True)
class EdgeArgs:
    config: FleetConfig
    stack: str
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    spot_group_name: pulumi.Input[str]
    on_demand_group_name: pulumi.Input[str]
    tags: dict[str, str]


class Edge(pulumi.ComponentResource):
    """An Elastic IP, an Auto Scaling group of one `edge.instance_type` across the public
    subnets, and the llmfleet code the edge runs, as a zip in a private S3 bucket.

    At first boot the instance installs llmfleet from the bundle, makes its Redis password, and
    runs nginx, Redis, the gateway (API keys and limits), the upstream sync agent
    (`llmfleet.edge.sync`) over the two GPU groups, and the exporters the monitor scrapes
    (docs/deploy.md §7). Once nginx's /health answers there, it associates the Elastic IP with
    itself (so a replacement edge takes the address over only when it serves); if it never
    answers, the instance marks itself unhealthy and its group replaces it. Its role may:
    describe Auto Scaling groups and EC2 instances (those two actions take no resource or tag
    scoping in IAM, so they are allowed on "*"); associate this stack's Elastic IP, onto
    instances and network interfaces tagged with this stack only (AWS checks both); mark
    instances of its own group unhealthy; publish the fleet's load (metrics in the `llmfleet`
    CloudWatch namespace only); read the bundle object; use SSM Session Manager.

    With `edge.tls.mode` certificate it may also read the two parameters holding the
    certificate chain and key, and no other.

    Outputs: `endpoint` (the OpenAI base URL: https://<domain>/v1 with acme, https://<ip>/v1
    with certificate, http://<ip>/v1 with TLS off), `public_ip`, `group_name`.
    """

    endpoint: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    group_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:Edge", name, None, opts)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)
        account = Account.current(self)
        tags = {**args.tags, ROLE_TAG: "edge"}

        address = aws.ec2.Eip(f"{name}-ip", domain="vpc", tags={**tags, "Name": f"{name}-ip"},
                              opts=child)
        bucket = aws.s3.Bucket(f"{name}-bundle", force_destroy=True, tags=tags, opts=child)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-bundle", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        bundle = aws.s3.BucketObjectv2(
            f"{name}-bundle", bucket=bucket.id, key=BUNDLE_KEY, source=bundle_archive(repo_root()),
            tags=tags, opts=child)

        # Redis's data (the API keys) on a volume of its own: a replaced edge instance attaches
        # it at boot, so keys outlive any instance. The group stays in the volume's zone.
        subnet_id = pulumi.Output.from_input(args.subnet_ids).apply(lambda ids: ids[0])
        zone = aws.ec2.get_subnet_output(
            id=subnet_id, opts=pulumi.InvokeOutputOptions(parent=self)).availability_zone
        redis_volume = aws.ebs.Volume(
            f"{name}-redis",
            availability_zone=zone,
            size=config.edge.redis_volume_gib,
            type="gp3",
            encrypted=True,
            tags={**tags, ROLE_TAG: REDIS_VOLUME_ROLE, "Name": f"{name}-redis"},
            opts=child,
        )
        RedisSnapshots(f"{name}-snapshots", stack=args.stack,
                       kept=config.edge.redis_snapshots_kept, tags=tags, parent=self)

        role, profile = instance_role(name, tags, self)
        aws.iam.RolePolicy(
            f"{name}-fleet",
            role=role.id,
            policy=pulumi.Output.all(
                account.partition, account.region, account.account_id, address.allocation_id,
                bucket.bucket, redis_volume.id,
            ).apply(lambda parts: _edge_policy(*parts, stack=args.stack,
                                               tls_parameters=config.edge.tls.parameters())),
            opts=child,
        )

        user_data = pulumi.Output.all(
            account.region, address.allocation_id, bucket.bucket, bundle.key,
            args.spot_group_name, args.on_demand_group_name, redis_volume.id,
        ).apply(lambda values: launch_user_data(render_edge(
            config, stack=args.stack, region=values[0], eip_allocation_id=values[1],
            bundle_bucket=values[2], bundle_key=values[3], spot_group=values[4],
            on_demand_group=values[5], redis_volume_id=values[6], boot_requirement=boto3_pin(),
        )))
        edge = config.edge
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            description=f"llmfleet edge of {args.stack}",
            image_id=pinned_ami(config, "edge", edge.ami_parameter, account, self),
            instance_type=edge.instance_type,
            iam_instance_profile={"arn": profile.arn},
            # Hop limit 1: nothing on the edge runs in a container that would need IMDS.
            metadata_options=imdsv2(hop_limit=1),
            block_device_mappings=encrypted_root(edge.root_volume_gib),
            # A public address of its own until the EIP replaces it: the boot script needs the
            # internet to reach the EC2 API that associates the EIP.
            network_interfaces=primary_interface(args.security_group_id, public_address=True),
            user_data=user_data,
            update_default_version=True,
            tag_specifications=launch_tags(tags),
            tags=tags,
            opts=child,
        )
        group = aws.autoscaling.Group(
            f"{name}-group",
            min_size=1,
            max_size=1,
            desired_capacity=1,
            vpc_zone_identifiers=[subnet_id],
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            health_check_type="EC2",
            health_check_grace_period=300,
            # A new AMI pin or user data (a new llmfleet bundle) reaches the running edge: it
            # is replaced, old first, since only one instance can hold the Redis volume. The
            # endpoint is down for one boot (a few minutes); the keys stay on the volume.
            instance_refresh=instance_refresh(warmup_s=300, min_healthy_percentage=0,
                                              max_healthy_percentage=100),
            tags=group_tags({**tags, "Name": f"{name}"}),
            opts=child,
        )
        # Apart from the role's other rights: the group's ARN exists only once the group does,
        # and the instance needs this only at the end of its boot, minutes later.
        aws.iam.RolePolicy(
            f"{name}-health",
            role=role.id,
            policy=group.arn.apply(lambda arn: policy_document({
                "Sid": "ReportAFailedBoot",
                "Effect": "Allow",
                "Action": "autoscaling:SetInstanceHealth",
                "Resource": arn,
            })),
            opts=child,
        )

        self.public_ip = address.public_ip
        self.endpoint = address.public_ip.apply(lambda ip: endpoint(config, ip))
        self.group_name = group.name
        self.register_outputs(
            {"endpoint": self.endpoint, "public_ip": self.public_ip, "group_name": self.group_name}
        )


def endpoint(config: FleetConfig, public_ip: str) -> str:
    """The OpenAI base URL: the certificate's name with acme; the address otherwise (a client
    of mode certificate uses the name its certificate carries, pointed at this address)."""
    tls = config.edge.tls
    if tls.mode is TlsMode.ACME:
        return f"https://{tls.domain}/v1"
    return f"{'https' if tls.on else 'http'}://{public_ip}/v1"


def _edge_policy(partition: str, region: str, account_id: str, allocation_id: str,
                 bucket: str, redis_volume_id: str, *, stack: str,
                 tls_parameters: tuple[str, ...] = ()) -> str:
    ec2 = f"arn:{partition}:ec2:{region}:{account_id}"
    certificate = [{
        # edge.tls.mode certificate: the chain and key, these two parameters only.
        "Sid": "ReadTheCertificate",
        "Effect": "Allow",
        "Action": "ssm:GetParameter",
        "Resource": [f"arn:{partition}:ssm:{region}:{account_id}:parameter{name}"
                     for name in tls_parameters],
    }] if tls_parameters else []
    return policy_document(
        *certificate,
        read_fleet("ReadFleetMembership"),
        {
            # Whether the Redis volume is free yet (the edge before may still hold it).
            "Sid": "SeeTheRedisVolume",
            "Effect": "Allow",
            "Action": "ec2:DescribeVolumes",
            "Resource": "*",
        },
        {
            # This stack's Redis volume, onto this stack's instances only: AWS checks the
            # volume and the instance, and both carry the stack's tag.
            "Sid": "AttachTheRedisVolume",
            "Effect": "Allow",
            "Action": "ec2:AttachVolume",
            "Resource": [f"{ec2}:volume/{redis_volume_id}", f"{ec2}:instance/*"],
            "Condition": {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": stack}},
        },
        {
            "Sid": "TakeThisStacksAddress",
            "Effect": "Allow",
            "Action": "ec2:AssociateAddress",
            "Resource": f"{ec2}:elastic-ip/{allocation_id}",
        },
        {
            # AWS authorizes the association against the instance and its network interface.
            "Sid": "OnlyOntoThisStacksInstances",
            "Effect": "Allow",
            "Action": "ec2:AssociateAddress",
            "Resource": [f"{ec2}:instance/*", f"{ec2}:network-interface/*"],
            "Condition": {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": stack}},
        },
        {
            # PutMetricData takes no resource; the namespace condition keeps it to llmfleet's
            # metrics (IAM cannot hold the Stack dimension to this stack).
            "Sid": "PublishTheFleetsLoad",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
        },
        {
            "Sid": "FetchTheLlmfleetBundle",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:{partition}:s3:::{bucket}/{BUNDLE_KEY}",
        },
    )


class RedisSnapshots(pulumi.ComponentResource):
    """A daily snapshot of the edge's Redis volume (found by its tags), `kept` of them, made by
    Data Lifecycle Manager with a role that can do that and no more."""

    def __init__(self, name: str, *, stack: str, kept: int, tags: dict[str, str],
                 parent: pulumi.Resource) -> None:
        super().__init__("llmfleet:index:RedisSnapshots", name, None,
                         pulumi.ResourceOptions(parent=parent))
        child = pulumi.ResourceOptions(parent=self)
        account = Account.current(self)
        role = aws.iam.Role(f"{name}-role", assume_role_policy=assumed_by("dlm.amazonaws.com"),
                            tags=tags, opts=child)
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=pulumi.Output.all(
            account.partition, account.region).apply(lambda parts: _snapshot_policy(*parts)),
            opts=child)
        aws.dlm.LifecyclePolicy(
            name,
            description=f"llmfleet: daily snapshots of {stack}'s Redis volume"[:500],
            execution_role_arn=role.arn,
            state="ENABLED",
            policy_details={
                "resource_types": ["VOLUME"],
                "target_tags": {STACK_TAG: stack, ROLE_TAG: REDIS_VOLUME_ROLE},
                "schedules": [{
                    "name": "daily",
                    "create_rule": {"interval": 24, "interval_unit": "HOURS",
                                    "times": "03:00"},
                    "retain_rule": {"count": kept},
                    "copy_tags": True,
                }],
            },
            tags=tags,
            opts=child,
        )
        self.register_outputs({})


def _snapshot_policy(partition: str, region: str) -> str:
    # Volumes and snapshots of the account's own (EC2's snapshot ARNs have no account).
    ec2 = f"arn:{partition}:ec2:{region}"
    return policy_document(
        {
            "Sid": "FindTheVolumes",
            "Effect": "Allow",
            "Action": ["ec2:DescribeVolumes", "ec2:DescribeInstances", "ec2:DescribeSnapshots"],
            "Resource": "*",
        },
        {
            "Sid": "SnapshotTheVolume",
            "Effect": "Allow",
            "Action": "ec2:CreateSnapshot",
            "Resource": [f"{ec2}:*:volume/*", f"{ec2}::snapshot/*"],
        },
        {
            "Sid": "TagAndPruneItsSnapshots",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ec2:DeleteSnapshot"],
            "Resource": f"{ec2}::snapshot/*",
        },
    )


def bundle_archive(root: Path) -> pulumi.AssetArchive:
    """The llmfleet bundle the edge installs (`bundle_files`), as a zip asset, with the exact
    versions its dependencies must have (`BUNDLE_CONSTRAINTS`)."""
    assets: dict[str, pulumi.Asset] = {
        path.relative_to(root).as_posix(): pulumi.FileAsset(str(path))
        for path in bundle_files(root)}
    assets[BUNDLE_CONSTRAINTS] = pulumi.StringAsset(runtime_constraints())
    return pulumi.AssetArchive(assets)


def runtime_constraints() -> str:
    """pip constraints pinning llmfleet's runtime dependencies, and theirs, to the versions
    installed where `pulumi up` runs (where the tests ran): an edge that boots next month
    installs these, not whatever PyPI offers that day. Extras (dev, infra, plot) stay out; a
    dependency's own extras (redis[hiredis]) come in."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    # pyproject.toml, not the installed metadata: an editable install keeps the dependency
    # list of the day it was made.
    project = tomllib.loads((repo_root() / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [Requirement(r) for r in project["project"]["dependencies"]] + [
        Requirement(EDGE_BOOT_REQUIREMENT)]
    while wanted:
        requirement = wanted.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        extras = {"", *requirement.extras}
        if {(name, extra) for extra in extras} <= seen:
            continue
        seen |= {(name, extra) for extra in extras}
        try:
            pinned[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise pulumi.RunError(
                f"llmfleet's dependency {name} is not installed where `pulumi up` runs; "
                "run ./scripts/bootstrap.sh first") from None
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e})
                                            for e in extras):
                needed.marker = None  # evaluated here, with this package's extras
                wanted.append(needed)
    return "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items()))


def boto3_pin() -> str:
    """boto3 as the edge installs it before it can fetch the bundle (and its constraints)."""
    return f"{EDGE_BOOT_REQUIREMENT}=={metadata.version(EDGE_BOOT_REQUIREMENT)}"


def bundle_files(root: Path) -> list[Path]:
    """What `pip install -e` needs on the edge: the runtime packages, their templates in
    images/, and the project files. The local tools (llmfleet.local: the sandbox, the
    simulator, the load generator), the CLI's wiring of them, caches and build leftovers stay
    out."""
    files = [root / "pyproject.toml", root / "README.md"]
    for folder in (root / "src" / "llmfleet", root / "images"):
        files += [
            path for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts
            and "local" not in path.relative_to(folder).parts[:1]
        ]
    return files
