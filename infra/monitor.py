"""The Monitor component: Prometheus, Alertmanager and Grafana on one small instance that
nothing can reach but an SSM port forward."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

import monitor_host
import pulumi
import pulumi_aws as aws
import pulumi_random as random
from cloud_init import render_monitor
from common import (
    ROLE_TAG,
    Account,
    imdsv2,
    instance_role,
    instance_user_data,
    launch_tags,
    pinned_ami,
    policy_document,
)

from llmfleet.config import FleetConfig
from llmfleet.services import MONITOR_HOST_PORTS

PORT_FORWARD_DOCUMENT = "AWS-StartPortForwardingSession"
EBS_GP3 = "gp3"
# The launch template's default version, as EC2 spells it: the instance follows the template
# without a diff of its own.
DEFAULT_VERSION = "$Default"


@dataclass(frozen=True)
class MonitorArgs:
    config: FleetConfig
    stack: str
    # The monitor lands in the first of these (the GPU nodes' subnets: private behind NAT, or
    # public with an outbound-only address when there is none).
    subnet_ids: pulumi.Input[list[str]]
    # SecurityGroups' monitor group: no ingress; the GPU nodes and the edge admit its scrapes.
    security_group_id: pulumi.Input[str]
    public_address: bool
    tags: dict[str, str]


class Monitor(pulumi.ComponentResource):
    """One `monitor.instance_type` instance (Ubuntu 24.04 for its architecture, from a launch
    template that names the image by its public SSM parameter; IMDSv2 with hop limit 1,
    encrypted gp3 root, no key pair) in the monitor security group, with:

    - Prometheus, discovering this stack's GPU nodes and edge through the EC2 API by their
      `llmfleet:stack` and `llmfleet:role` tags, with the rules of
      `llmfleet.observability.rules`, keeping `monitor.retention_days` of data on its own
      encrypted gp3 volume (`monitor.data_volume_gib`), which survives the instance;
    - Alertmanager, to Slack and PagerDuty when `monitor.slack_webhook_parameter` and
      `monitor.pagerduty_routing_key_parameter` name SSM SecureString parameters (yours to
      create); the instance reads them at every boot into root-only files;
    - Grafana with the Prometheus datasource and this repository's dashboards, its admin
      password generated here (random) into the SecureString `monitor.grafana_admin_password_
      parameter` (default /llmfleet/<stack>/grafana-admin-password).

    The services' config files are one object in a private bucket (with every file, they are
    larger than EC2's 16 KB of user data); the user data names it with its SHA-256, so a changed
    config replaces the instance, as does any other change of its user data. EC2 resolves the
    image at launch, so a newer Ubuntu build replaces nothing; a replacement gets the newest.

    Its role may: describe instances and availability zones (EC2 discovery; neither takes
    resource scoping), read exactly the configured parameters, read its config object, use SSM
    Session Manager. With the AWS-managed key `aws/ssm` the parameters need no KMS grant.

    Outputs: `instance_id`, `grafana_password_parameter`, `grafana_password_command`, and
    `port_forward_commands` (`grafana`, `prometheus`, `alertmanager`: the `aws ssm
    start-session` command that makes each answer on the same port of localhost).
    """

    instance_id: pulumi.Output[str]
    grafana_password_parameter: str
    grafana_password_command: pulumi.Output[str]
    port_forward_commands: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, args: MonitorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:Monitor", name, None, opts)
        config, monitor = args.config, args.config.monitor
        if not monitor.enabled:
            raise ValueError("monitor.enabled is false: create no Monitor")
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        account = Account.current(self)
        tags = {**args.tags, ROLE_TAG: "monitor"}

        password_parameter = monitor.grafana_password_parameter(args.stack)
        password = random.RandomPassword(f"{name}-grafana-password", length=32, special=False,
                                         opts=child)
        aws.ssm.Parameter(
            f"{name}-grafana-password",
            name=password_parameter,
            type="SecureString",
            value=password.result,
            description=f"Grafana's admin password on the llmfleet monitor of {args.stack}",
            tags=tags,
            opts=child,
        )

        subnet_id = pulumi.Output.from_input(args.subnet_ids).apply(lambda ids: ids[0])
        zone = aws.ec2.get_subnet_output(id=subnet_id, opts=invoke).availability_zone
        volume = aws.ebs.Volume(
            f"{name}-data",
            availability_zone=zone,
            size=monitor.data_volume_gib,
            type=EBS_GP3,
            encrypted=True,
            tags={**tags, "Name": f"{name}-data"},
            opts=child,
        )

        bucket = aws.s3.Bucket(f"{name}-config", force_destroy=True, tags=tags, opts=child)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-config", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        bundle = account.region.apply(lambda region: monitor_host.config_bundle(
            config, stack=args.stack, region=region,
            grafana_password_parameter=password_parameter))
        config_object = aws.s3.BucketObjectv2(
            f"{name}-config", bucket=bucket.id, key=monitor_host.CONFIG_KEY, content=bundle,
            content_type="application/json", tags=tags, opts=child)

        role, profile = instance_role(name, tags, self)
        # Exactly the parameters the instance reads (the Slack and PagerDuty ones when named).
        parameters = [s.parameter for s in monitor_host.secrets(config, password_parameter)]
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.all(
                account.partition, account.region, account.account_id, bucket.bucket,
            ).apply(lambda parts: monitor_policy(*parts, parameters=parameters)),
            opts=child,
        )
        if not (monitor.slack_webhook_parameter or monitor.pagerduty_routing_key_parameter):
            pulumi.log.warn(
                "llmfleet:monitor names neither slack_webhook_parameter nor "
                "pagerduty_routing_key_parameter: alerts fire in Alertmanager and go nowhere.",
                resource=self,
            )

        user_data = pulumi.Output.all(account.region, volume.id, bucket.bucket, bundle).apply(
            lambda values: instance_user_data(render_monitor(
                config, stack=args.stack, region=values[0], volume_id=values[1],
                grafana_password_parameter=password_parameter, config_bucket=values[2],
                config_sha256=hashlib.sha256(values[3].encode()).hexdigest())))
        # The image as EC2 resolves it at each launch, as for the edge and the GPU nodes: a
        # newer Ubuntu build replaces nothing, and a replacement instance gets the newest.
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            description=f"llmfleet monitor of {args.stack}",
            image_id=pinned_ami(config, "monitor", monitor.image_parameter, account, self),
            update_default_version=True,
            # The root disk and the network interface are tagged as they are made.
            tag_specifications=launch_tags(tags),
            tags=tags,
            opts=child,
        )
        instance = aws.ec2.Instance(
            f"{name}-instance",
            launch_template={"id": template.id, "version": DEFAULT_VERSION},
            instance_type=monitor.instance_type,
            subnet_id=subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            associate_public_ip_address=args.public_address,
            iam_instance_profile=profile.name,
            metadata_options=imdsv2(hop_limit=1),
            root_block_device={
                "volume_size": monitor.root_volume_gib,
                "volume_type": EBS_GP3,
                "encrypted": True,
                "delete_on_termination": True,
                "tags": {**tags, "Name": f"{name}-root"},
            },
            user_data=user_data,
            # Its services read their settings at first boot: a new config is a new instance
            # (the data volume moves over).
            user_data_replace_on_change=True,
            # EC2 moves the instance to healthy hardware when the host fails (types that allow).
            maintenance_options={"auto_recovery": "default"},
            tags={**tags, "Name": name},
            opts=pulumi.ResourceOptions(
                parent=self,
                # The volume can be attached to one instance only: the old one goes first.
                delete_before_replace=True,
                depends_on=[config_object, policy],
            ),
        )
        aws.ec2.VolumeAttachment(
            f"{name}-data",
            device_name=monitor_host.DATA_DEVICE,
            volume_id=volume.id,
            instance_id=instance.id,
            # Prometheus stops (and flushes) before its disk goes.
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        self.instance_id = instance.id
        self.grafana_password_parameter = password_parameter
        self.grafana_password_command = account.region.apply(
            lambda region: password_command(region, password_parameter))
        self.port_forward_commands = pulumi.Output.all(account.region, instance.id).apply(
            lambda values: port_forward_commands(*values))
        self.register_outputs({
            "instance_id": self.instance_id,
            "grafana_password_parameter": self.grafana_password_parameter,
            "grafana_password_command": self.grafana_password_command,
            "port_forward_commands": self.port_forward_commands,
        })


def monitor_policy(partition: str, region: str, account_id: str, bucket: str, *,
                   parameters: list[str]) -> str:
    ssm = f"arn:{partition}:ssm:{region}:{account_id}:parameter"
    return policy_document(
        {
            # Prometheus' EC2 discovery; the zones give the `zone` label its zone id too.
            # Neither action supports resource-level permissions.
            "Sid": "DiscoverScrapeTargets",
            "Effect": "Allow",
            "Action": ["ec2:DescribeAvailabilityZones", "ec2:DescribeInstances"],
            "Resource": "*",
        },
        {
            "Sid": "ReadItsSecrets",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            # Hierarchical names start with "/": the ARN is "parameter" + name.
            "Resource": [f"{ssm}{name}" for name in parameters],
        },
        {
            "Sid": "FetchItsConfig",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:{partition}:s3:::{bucket}/{monitor_host.CONFIG_KEY}",
        },
    )


def port_forward_commands(region: str, instance_id: str) -> dict[str, str]:
    """The command that makes each service answer on the same port of localhost."""
    ports = MONITOR_HOST_PORTS
    return {
        service: shlex.join([
            "aws", "ssm", "start-session", "--region", region, "--target", instance_id,
            "--document-name", PORT_FORWARD_DOCUMENT, "--parameters",
            json.dumps({"portNumber": [str(port)], "localPortNumber": [str(port)]},
                       separators=(",", ":")),
        ])
        for service, port in (("grafana", ports.grafana), ("prometheus", ports.prometheus),
                              ("alertmanager", ports.alertmanager))
    }


def password_command(region: str, parameter: str) -> str:
    return shlex.join(["aws", "ssm", "get-parameter", "--region", region, "--name", parameter,
                       "--with-decryption", "--query", "Parameter.Value", "--output", "text"])
