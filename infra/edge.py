"""The Edge component: the public endpoint, an nginx node in a group of one behind an EIP."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
from cloud_init import render_edge
from common import (
    ROLE_TAG,
    STACK_TAG,
    Account,
    encrypted_root,
    group_tags,
    imdsv2,
    instance_role,
    launch_tags,
    policy_document,
    primary_interface,
    read_fleet,
)

from llmfleet.autoscale.cloudwatch import NAMESPACE
from llmfleet.config import FleetConfig
from llmfleet.paths import repo_root

BUNDLE_KEY = "llmfleet.zip"


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

    Outputs: `endpoint` (the OpenAI base URL, http://<ip>/v1), `public_ip`, `group_name`.
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

        role, profile = instance_role(name, tags, self)
        aws.iam.RolePolicy(
            f"{name}-fleet",
            role=role.id,
            policy=pulumi.Output.all(
                account.partition, account.region, account.account_id, address.allocation_id,
                bucket.bucket,
            ).apply(lambda parts: _edge_policy(*parts, stack=args.stack)),
            opts=child,
        )

        user_data = pulumi.Output.all(
            account.region, address.allocation_id, bucket.bucket, bundle.key,
            args.spot_group_name, args.on_demand_group_name,
        ).apply(lambda values: base64.b64encode(render_edge(
            config, stack=args.stack, region=values[0], eip_allocation_id=values[1],
            bundle_bucket=values[2], bundle_key=values[3], spot_group=values[4],
            on_demand_group=values[5],
        ).encode()).decode())
        edge = config.edge
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            description=f"llmfleet edge of {args.stack}",
            image_id=f"resolve:ssm:{edge.ami_parameter}",
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
            vpc_zone_identifiers=args.subnet_ids,
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            health_check_type="EC2",
            health_check_grace_period=300,
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
        self.endpoint = address.public_ip.apply(lambda ip: f"http://{ip}/v1")
        self.group_name = group.name
        self.register_outputs(
            {"endpoint": self.endpoint, "public_ip": self.public_ip, "group_name": self.group_name}
        )


def _edge_policy(partition: str, region: str, account_id: str, allocation_id: str,
                 bucket: str, *, stack: str) -> str:
    ec2 = f"arn:{partition}:ec2:{region}:{account_id}"
    return policy_document(
        read_fleet("ReadFleetMembership"),
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


def bundle_archive(root: Path) -> pulumi.AssetArchive:
    """The llmfleet bundle the edge installs (`bundle_files`), as a zip asset."""
    return pulumi.AssetArchive({path.relative_to(root).as_posix(): pulumi.FileAsset(str(path))
                                for path in bundle_files(root)})


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
