"""Pieces the GpuFleet and Edge components share: instance roles, group tags, the account."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from llmfleet.config import FleetConfig

# Keys with ':' are valid AWS tag keys (EC2, Auto Scaling, IAM, Lambda, instance metadata);
# only an 'aws:' prefix is reserved. Prometheus EC2 discovery sees `llmfleet:client` as the
# label `__meta_ec2_tag_llmfleet_client`.
TAG_PREFIX = "llmfleet:"
STACK_TAG = f"{TAG_PREFIX}stack"
ROLE_TAG = f"{TAG_PREFIX}role"  # gpu-node | edge
CAPACITY_TAG = f"{TAG_PREFIX}capacity"  # spot | on-demand

# The longest name the components' children start with. AWS caps some names (IAM roles and
# Lambda functions 64, S3 buckets 63, EventBridge rules 64) and the provider appends 8
# characters to each, so "<stem>-edge-bundle-1a2b3c4" and the like must fit: the longest such
# child is "<stem>-drain-interruption" (64 - 8 - 19 = 37 room for the stem).
NAME_STEM_MAX = 32

# What the SSM agent needs for Session Manager and nothing more (AWS's "custom IAM instance
# profile for Session Manager"); none of these actions takes a resource.
SESSION_MANAGER = {
    "Sid": "SessionManagerOnly",
    "Effect": "Allow",
    "Action": ["ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel",
               "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
               "ssmmessages:OpenDataChannel"],
    "Resource": "*",
}
# Root device of Canonical's Ubuntu AMIs, the Deep Learning Base AMI included.
UBUNTU_ROOT_DEVICE = "/dev/sda1"


@dataclass(frozen=True)
class Account:
    """Partition, region and account id, for exact ARNs in IAM policies."""

    partition: pulumi.Output[str]
    region: pulumi.Output[str]
    account_id: pulumi.Output[str]

    @classmethod
    def current(cls, parent: pulumi.Resource) -> Account:
        opts = pulumi.InvokeOutputOptions(parent=parent)
        return cls(
            partition=aws.get_partition_output(opts=opts).partition,
            region=aws.get_region_output(opts=opts).region,
            account_id=aws.get_caller_identity_output(opts=opts).account_id,
        )


def name_stem(name: str) -> str:
    """The start of every resource name in a stack: `name` (the config's
    <client>-<environment>) when it is short enough, else its beginning and a hash of the
    whole, so two long names that share a beginning still differ. The tags carry the full
    client, environment and stack."""
    if len(name) <= NAME_STEM_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[:NAME_STEM_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def group_tags(tags: dict[str, str]) -> list[dict[str, Any]]:
    """Auto Scaling tags, copied onto every instance the group launches (discovery and cost)."""
    return [{"key": k, "value": v, "propagate_at_launch": True} for k, v in tags.items()]


def policy_document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assumed_by(service: str) -> str:
    """A role's trust policy: only `service` (ec2.amazonaws.com, lambda.amazonaws.com) may
    assume it."""
    return policy_document({
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    })


def read_fleet(sid: str) -> dict[str, Any]:
    """Reading the GPU groups and their instances. Neither action supports resource-level
    permissions or tag conditions, so both are allowed on "*"."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"],
        "Resource": "*",
    }


def instance_role(
    name: str, tags: dict[str, str], parent: pulumi.Resource
) -> tuple[aws.iam.Role, aws.iam.InstanceProfile]:
    """An EC2 instance role with SSM Session Manager (the only way in: no SSH, no key pair),
    and its instance profile. Callers add what the role needs beyond that; no instance role
    reads any parameter but the ones its caller names."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=assumed_by("ec2.amazonaws.com"),
        tags=tags,
        opts=child,
    )
    # Not the managed AmazonSSMManagedInstanceCore: it also allows ssm:GetParameter* on every
    # parameter of the account, every other stack's secrets included.
    aws.iam.RolePolicy(f"{name}-ssm", role=role.id, policy=policy_document(SESSION_MANAGER),
                       opts=child)
    profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags, opts=child)
    return role, profile


def imdsv2(hop_limit: int) -> dict[str, Any]:
    """Instance metadata with session tokens only (IMDSv2), reachable `hop_limit` hops away."""
    return {
        "http_endpoint": "enabled",
        "http_tokens": "required",
        "http_put_response_hop_limit": hop_limit,
    }


def encrypted_root(size_gib: int) -> list[dict[str, Any]]:
    return [{
        "device_name": UBUNTU_ROOT_DEVICE,
        "ebs": {
            "volume_size": size_gib,
            "volume_type": "gp3",
            "encrypted": "true",
            "delete_on_termination": "true",
        },
    }]


def primary_interface(security_group_id: pulumi.Input[str], public_address: bool
                      ) -> list[dict[str, Any]]:
    """The instance's one network interface, in its security group."""
    return [{
        "device_index": 0,
        "associate_public_ip_address": str(public_address).lower(),
        "security_groups": [security_group_id],
        "delete_on_termination": "true",
    }]


def launch_tags(tags: dict[str, str]) -> list[dict[str, Any]]:
    """Tags for what a launch creates besides the instance, so cost reports see disks and
    interfaces too."""
    return [{"resource_type": kind, "tags": tags} for kind in ("volume", "network-interface")]


def pinned_ami(config: FleetConfig, role: str, parameter: str, account: Account,
               parent: pulumi.Resource) -> pulumi.Output[str]:
    """The AMI id `role` launches: the stack's pin for its region (`images.amis`). Without
    one, the image the public SSM `parameter` names at this `pulumi up`, fixed in the launch
    template until the next one (never resolved again at each launch), with a warning."""
    today = aws.ssm.get_parameter_output(
        name=parameter, opts=pulumi.InvokeOutputOptions(parent=parent)).insecure_value

    def choose(parts: list[str]) -> str:
        region, current = parts
        pin = config.images.ami(region, role)
        if pin is not None:
            return pin
        pulumi.log.warn(
            f"llmfleet:images.amis.{region}.{role} is not set: launching {current}, which "
            f"{parameter} names today; a later `pulumi up` may move it. Pin it with "
            "`llmfleet amis STACK_FILE --write`.", resource=parent)
        return current

    return pulumi.Output.all(account.region, today).apply(choose)


def instance_refresh(*, warmup_s: int, min_healthy_percentage: int,
                     max_healthy_percentage: int) -> dict[str, Any]:
    """A rolling instance refresh, started by AWS whenever the group's launch template version
    changes (a new AMI pin, new user data); instances already on it are skipped."""
    return {
        "strategy": "Rolling",
        "preferences": {
            "instance_warmup": str(warmup_s),
            "min_healthy_percentage": min_healthy_percentage,
            "max_healthy_percentage": max_healthy_percentage,
            "skip_matching": True,
        },
    }


# EC2 takes at most 16 KB of user data, counted before base64.
USER_DATA_MAX_BYTES = 16 * 1024


def launch_user_data(text: str) -> str:
    """User data for a launch template: gzip-compressed (cloud-init unpacks it; the edge's
    cloud-config alone is close to EC2's 16 KB) and base64-encoded, as the template wants.
    mtime 0 keeps the bytes the same for the same text, so an unchanged config changes no
    template."""
    packed = gzip.compress(text.encode(), mtime=0)
    _within_ec2s_limit(packed, "gzip-compressed")
    return base64.b64encode(packed).decode()


def instance_user_data(text: str) -> str:
    """User data an instance takes as text (EC2 encodes it), within EC2's limit."""
    _within_ec2s_limit(text.encode(), "as text")
    return text


def _within_ec2s_limit(data: bytes, form: str) -> None:
    if len(data) > USER_DATA_MAX_BYTES:
        raise pulumi.RunError(f"user data of {len(data)} bytes, {form}: EC2 takes at most "
                              f"{USER_DATA_MAX_BYTES}")
