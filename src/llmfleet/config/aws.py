"""Config sections for the AWS deployment: network, edge node, GPU node, on-demand fallback,
monitor host and prices. The sandbox ignores them; `infra/` and `llmfleet.local.cost` read them.

Defaults are the cheap, safe choice: a new VPC without a NAT gateway, an edge that accepts no
traffic until `edge.allowed_cidrs` says from where, and no secret anywhere in this model (the
Hugging Face token stays in SSM Parameter Store; see docs/deploy.md).
"""

from __future__ import annotations

import ipaddress
import math
import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import (
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmfleet.config.base import GPU_INSTANCE_FAMILIES, Strict
from llmfleet.config.images import ContainerImage

# The AWS Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04): NVIDIA driver, Docker and
# the NVIDIA Container Toolkit preinstalled. A public SSM parameter always names the newest build.
DLAMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
# Canonical's Ubuntu 24.04 for the edge: its Python 3.12 runs llmfleet (which needs 3.11+).
UBUNTU_PARAMETER = (
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
)
# The same release for Graviton (arm64) types, the monitor's default.
UBUNTU_ARM64_PARAMETER = UBUNTU_PARAMETER.replace("/amd64/", "/arm64/")

# The edge must not be a GPU type; anything else EC2 spells family.size is allowed.
InstanceTypeName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"),
    Field(description="an EC2 instance type such as t3.small"),
]
VpcId = Annotated[
    str,
    StringConstraints(pattern=r"^vpc-[0-9a-f]{8,17}$"),
    Field(description="a VPC id such as vpc-0123456789abcdef0"),
]
SubnetId = Annotated[
    str,
    StringConstraints(pattern=r"^subnet-[0-9a-f]{8,17}$"),
    Field(description="a subnet id such as subnet-0123456789abcdef0"),
]
# Hierarchical names only, so the IAM resource ARN is "parameter" + name.
SsmParameterName = Annotated[
    str,
    StringConstraints(pattern=r"^/[A-Za-z0-9_.\-/]{1,1010}$", max_length=1011),
    Field(description="an SSM parameter path starting with '/', e.g. /llmfleet/acme-prod/hf-token"),
]
Usd = Annotated[float, Field(ge=0, le=1000)]

# The Prometheus exporters on every GPU node (vLLM's own /metrics is on its API port).
DCGM_EXPORTER_PORT = 9400
NODE_EXPORTER_PORT = 9100
# The edge's ports are in llmfleet.services, with the services that use them.
# A NAT gateway in us-east-1 costs USD 0.045/hour (about 32/month) plus 0.045 per GB processed.
NAT_GATEWAY_USD_HOUR = 0.045


class NetworkSpec(Strict):
    """Where the fleet runs: an existing VPC and subnets, or a VPC created across `az_count` AZs.

    Without NAT (the default) GPU nodes sit in the public subnets with a public IPv4 address for
    outbound traffic (image and weight downloads) and a security group that admits nothing from
    the internet. `nat: true` puts them in private subnets behind one NAT gateway instead.
    """

    vpc_id: VpcId | None = Field(None, description="a VPC id such as vpc-0123456789abcdef0")
    public_subnet_ids: tuple[SubnetId, ...] = Field(
        (), description="a subnet id such as subnet-0123456789abcdef0")
    private_subnet_ids: tuple[SubnetId, ...] = Field(
        (), description="a subnet id such as subnet-0123456789abcdef0")
    # Up to /24: split for 6 AZs x 2 tiers it still leaves /28 subnets, AWS's smallest.
    cidr: str = Field("10.42.0.0/16", description="an IPv4 network from /16 to /24")
    az_count: int = Field(2, ge=2, le=6)
    nat: bool = False

    @field_validator("cidr")
    @classmethod
    def _ipv4_network(cls, value: str) -> str:
        try:
            network = ipaddress.IPv4Network(value)
        except ValueError as error:
            raise ValueError(f"must be an IPv4 network from /16 to /24 ({error})") from None
        if not 16 <= network.prefixlen <= 24:
            raise ValueError("must be an IPv4 network from /16 to /24")
        return str(network)

    @model_validator(mode="after")
    def _existing_or_created(self) -> Self:
        if self.vpc_id is None:
            if self.public_subnet_ids or self.private_subnet_ids:
                raise ValueError("subnet ids need vpc_id; leave both out to create a VPC")
        else:
            if len(self.public_subnet_ids) < 1:
                raise ValueError("an existing vpc_id needs public_subnet_ids (at least one)")
            if self.nat:
                raise ValueError(
                    "nat applies only to a VPC llmfleet creates; with vpc_id, list "
                    "private_subnet_ids that already route out"
                )
        return self

    @property
    def subnets_per_az(self) -> int:
        return 2 if self.nat else 1

    @property
    def subnet_prefix(self) -> int:
        """Prefix length that splits `cidr` into one subnet per AZ and tier."""
        wanted = self.az_count * self.subnets_per_az
        return ipaddress.IPv4Network(self.cidr).prefixlen + math.ceil(math.log2(wanted))

    def subnet_cidrs(self) -> tuple[list[str], list[str]]:
        """(public, private) CIDRs for a created VPC; private is empty without NAT."""
        blocks = [str(b) for b in ipaddress.IPv4Network(self.cidr).subnets(
            new_prefix=self.subnet_prefix)]
        public = blocks[: self.az_count]
        private = blocks[self.az_count : 2 * self.az_count] if self.nat else []
        return public, private


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as error:
        raise ValueError(f"not a CIDR block such as 203.0.113.0/24 ({error})") from None


Cidr = Annotated[str, Field(description="an IPv4 or IPv6 CIDR block")]


# Open to the whole internet: plain HTTP there sends every API key in clear text.
WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
DomainName = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$",
        max_length=253),
    Field(description="a DNS name such as api.example.com, lower case"),
]
EmailAddress = Annotated[
    str,
    StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254),
    Field(description="an e-mail address such as ops@example.com"),
]


class TlsMode(StrEnum):
    ACME = "acme"  # Let's Encrypt, by certbot on the edge
    CERTIFICATE = "certificate"  # a chain and key of your own, from SSM SecureStrings
    OFF = "off"  # plain HTTP


class EdgeTls(Strict):
    """HTTPS on the edge. `acme`: certbot gets a Let's Encrypt certificate for `domain` (which
    must resolve to the edge's Elastic IP) and renews it. `certificate`: the PEM chain and key
    are read at boot from the SecureString parameters named here. `off`: plain HTTP, refused
    while `edge.allowed_cidrs` opens the edge to the whole internet unless
    `plain_http_from_anywhere` says so (the policy pack warns about it)."""

    mode: TlsMode = Field(TlsMode.OFF, description="acme, certificate or off")
    domain: DomainName | None = Field(
        None, description="a DNS name such as api.example.com, lower case, resolving to the "
                          "edge's Elastic IP")
    email: EmailAddress | None = Field(
        None, description="an e-mail address such as ops@example.com (Let's Encrypt's "
                          "expiry notices)")
    certificate_parameter: SsmParameterName | None = Field(
        None, description="an SSM parameter path starting with '/' (the SecureString holding "
                          "the PEM certificate chain, leaf first)")
    key_parameter: SsmParameterName | None = Field(
        None, description="an SSM parameter path starting with '/' (the SecureString holding "
                          "the PEM private key)")
    plain_http_from_anywhere: bool = False

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 (PyYAML) reads an unquoted `off` as false.
        return TlsMode.OFF if value is False else value

    @model_validator(mode="after")
    def _mode_has_what_it_needs(self) -> Self:
        needs = {TlsMode.ACME: ("domain", "email"),
                 TlsMode.CERTIFICATE: ("certificate_parameter", "key_parameter"),
                 TlsMode.OFF: ()}
        problems = [f"mode {self.mode.value} needs {key}" for key in needs[self.mode]
                    if getattr(self, key) is None]
        problems += [f"{key} applies to mode {mode.value} only; remove it"
                     for mode, keys in needs.items() if mode is not self.mode
                     for key in keys if getattr(self, key) is not None]
        if self.plain_http_from_anywhere and self.mode is not TlsMode.OFF:
            problems.append("plain_http_from_anywhere applies to mode off only; remove it")
        if (self.certificate_parameter is not None
                and self.certificate_parameter == self.key_parameter):
            problems.append("certificate_parameter and key_parameter must differ")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def on(self) -> bool:
        return self.mode is not TlsMode.OFF

    def parameters(self) -> tuple[str, ...]:
        """The SSM parameters the edge reads at boot (mode certificate)."""
        return tuple(p for p in (self.certificate_parameter, self.key_parameter) if p)


class EdgeSpec(Strict):
    """The edge node: one small instance behind an Elastic IP running nginx, Redis, the gateway
    and the upstream sync agent.

    `allowed_cidrs` is empty by default, so a new stack is reachable from nowhere until its
    owner says from where: the API admits whoever reaches it, and a forgotten default must not
    put paid GPUs on the internet. Use ["0.0.0.0/0"] for a public API; then `tls` must say how
    the edge gets its certificate (see `EdgeTls`), since plain HTTP would carry API keys in
    clear text across the internet.
    """

    instance_type: InstanceTypeName = "t3.small"
    allowed_cidrs: tuple[Cidr, ...] = ()
    root_volume_gib: int = Field(20, ge=8, le=1024)
    # API keys live in Redis on a volume of their own, which outlives any edge instance.
    redis_volume_gib: int = Field(
        1, ge=1, le=1024, description="the encrypted gp3 volume holding Redis's data (keys)")
    redis_snapshots_kept: int = Field(
        7, ge=1, le=1000, description="daily snapshots of the Redis volume to keep")
    ami_parameter: SsmParameterName = UBUNTU_PARAMETER
    # Each pass reads the fleet's members and probes every one's /health (active health
    # checks): a node that stops answering is out within one interval.
    sync_interval_s: float = Field(
        10.0, ge=1, le=3600,
        description="seconds between two passes of the edge's sync agent (members, /health)")
    tls: EdgeTls = Field(default_factory=EdgeTls)

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_cidr(v) for v in value)

    @field_validator("instance_type")
    @classmethod
    def _not_gpu(cls, value: str) -> str:
        if value.split(".", 1)[0] in GPU_INSTANCE_FAMILIES:
            raise ValueError("the edge needs no GPU; pick a small general-purpose type (t3.small)")
        return value

    @model_validator(mode="after")
    def _no_plain_http_to_the_world(self) -> Self:
        if (self.tls.mode is TlsMode.OFF and not self.tls.plain_http_from_anywhere
                and self.open_to_the_world):
            raise ValueError(
                f"tls.mode off with allowed_cidrs {list(self.allowed_cidrs)} sends API keys in "
                "clear text across the internet; set tls.mode to acme (with tls.domain and "
                "tls.email) or certificate (with tls.certificate_parameter and "
                "tls.key_parameter), narrow allowed_cidrs, or set "
                "tls.plain_http_from_anywhere: true")
        return self

    @property
    def open_to_the_world(self) -> bool:
        return any(ipaddress.ip_network(c) in WORLD for c in self.allowed_cidrs)


class GpuNodeSpec(Strict):
    """How every GPU node boots: AMI, disk, vLLM's port, exporters and the HF token's place."""

    vllm_port: int = Field(8000, ge=1024, le=65535)
    root_volume_gib: int = Field(
        150, ge=80, le=16384,
        description="AMI (~60 GiB) + vLLM image (~20 GiB) + model weights; 80-16384")
    cold_start_s: int = Field(
        600, ge=60, le=3600,
        description="seconds from launch until vLLM answers: boot, image pull, weights, load")
    hf_token_parameter: SsmParameterName | None = Field(
        None, description="an SSM parameter path starting with '/' (the SecureString holding "
                          "the HF token; default /llmfleet/<stack>/hf-token)")
    ami_parameter: SsmParameterName = DLAMI_PARAMETER
    dcgm_exporter_image: ContainerImage = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"
    node_exporter_image: ContainerImage = "quay.io/prometheus/node-exporter:v1.8.2"

    @field_validator("vllm_port")
    @classmethod
    def _not_an_exporter_port(cls, value: int) -> int:
        if value in (DCGM_EXPORTER_PORT, NODE_EXPORTER_PORT):
            raise ValueError(
                f"ports {DCGM_EXPORTER_PORT} and {NODE_EXPORTER_PORT} belong to the exporters")
        return value

    def token_parameter(self, stack: str) -> str:
        return self.hf_token_parameter or f"/llmfleet/{stack}/hf-token"


class OnDemandFallback(Strict):
    """The on-demand group beside the spot group: `fleet.instance_types[0]`, a warm pool of
    stopped instances (EBS cost only), and `min_size` nodes that are always on."""

    min_size: int = Field(0, ge=0, le=1000, description="on-demand nodes always running")
    max_size: int = Field(2, ge=1, le=1000)
    warm_pool: int = Field(1, ge=0, le=100, description="stopped instances kept ready")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> Self:
        if self.min_size > self.max_size:
            raise ValueError(
                f"sizes must satisfy min_size <= max_size; got {self.min_size} <= {self.max_size}"
            )
        return self


def architecture(instance_type: str) -> str:
    """`arm64` for a Graviton type (a "g" among the attributes after the generation digit:
    t4g, m7g, c6gn, im4gn; and a1), `amd64` for everything else."""
    family = instance_type.split(".", 1)[0]
    found = re.fullmatch(r"[a-z]+\d+([a-z-]*)", family)
    if family == "a1" or (found is not None and "g" in found.group(1)):
        return "arm64"
    return "amd64"


class MonitorSpec(Strict):
    """The monitor host: one small instance running Prometheus, Alertmanager and Grafana,
    reachable through SSM port forwarding only (its security group admits nothing).

    Secrets stay in SSM Parameter Store: the Slack webhook URL and the PagerDuty routing key are
    SecureString parameters you create (named here; none means that destination is off), read
    by the instance at every boot; Grafana's admin password is generated by Pulumi into a
    SecureString parameter. The instance type's architecture picks the Ubuntu image, so a
    Graviton type (the default, t4g.small: USD 0.0168/h against t3.small's 0.0208) needs no
    other change.
    """

    enabled: bool = Field(True, description="run the monitor host")
    instance_type: InstanceTypeName = "t4g.small"
    ami_parameter: SsmParameterName | None = Field(
        None, description="an SSM parameter path starting with '/' (the image; null: Ubuntu "
                          "24.04 for the instance type's architecture)")
    root_volume_gib: int = Field(10, ge=8, le=1024)
    data_volume_gib: int = Field(
        20, ge=4, le=16384,
        description="Prometheus' own encrypted gp3 volume, kept across instance replacements")
    retention_days: int = Field(
        15, ge=1, le=3650,
        description="days of metrics Prometheus keeps (and never more than 85 % of the volume)")
    slack_webhook_parameter: SsmParameterName | None = Field(
        None, description="an SSM parameter path starting with '/' (the SecureString holding "
                          "the Slack incoming-webhook URL; null: no Slack)")
    pagerduty_routing_key_parameter: SsmParameterName | None = Field(
        None, description="an SSM parameter path starting with '/' (the SecureString holding "
                          "a PagerDuty Events v2 routing key; null: no paging)")
    grafana_admin_password_parameter: SsmParameterName | None = Field(
        None, description="an SSM parameter path starting with '/' (where Pulumi stores "
                          "Grafana's generated admin password; null: "
                          "/llmfleet/<stack>/grafana-admin-password)")

    @field_validator("instance_type")
    @classmethod
    def _not_gpu(cls, value: str) -> str:
        if value.split(".", 1)[0] in GPU_INSTANCE_FAMILIES:
            raise ValueError(
                "the monitor needs no GPU; pick a small general-purpose type (t4g.small)")
        return value

    @model_validator(mode="after")
    def _image_fits_and_parameters_differ(self) -> Self:
        arch = self.architecture
        other = {"arm64": ("/amd64/", "/x86_64/"), "amd64": ("/arm64/",)}[arch]
        if self.ami_parameter is not None and any(p in self.ami_parameter for p in other):
            raise ValueError(
                f"ami_parameter names an image for another architecture than instance_type "
                f"{self.instance_type} ({arch}); leave it null to follow the type")
        named = [p for p in (self.slack_webhook_parameter, self.pagerduty_routing_key_parameter,
                             self.grafana_admin_password_parameter) if p is not None]
        if len(set(named)) != len(named):
            raise ValueError("slack_webhook_parameter, pagerduty_routing_key_parameter and "
                             "grafana_admin_password_parameter must be different parameters")
        return self

    @property
    def architecture(self) -> str:
        return architecture(self.instance_type)

    @property
    def image_parameter(self) -> str:
        if self.ami_parameter is not None:
            return self.ami_parameter
        return UBUNTU_ARM64_PARAMETER if self.architecture == "arm64" else UBUNTU_PARAMETER

    def grafana_password_parameter(self, stack: str) -> str:
        return self.grafana_admin_password_parameter or f"/llmfleet/{stack}/grafana-admin-password"


# USD/hour, Linux, us-east-1 (us-west-2 is the same for these types). On-demand: list prices;
# spot: typical recent prices, which move. Set your region's in the stack file.
ON_DEMAND_USD_HOUR = {
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g6.xlarge": 0.805, "g6.2xlarge": 0.978,
    "g6e.xlarge": 1.861, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416,
    "t4g.small": 0.0168, "t4g.medium": 0.0336,
}
SPOT_USD_HOUR = {
    "g4dn.xlarge": 0.22, "g4dn.2xlarge": 0.33, "g4dn.4xlarge": 0.50,
    "g5.xlarge": 0.42, "g5.2xlarge": 0.50, "g6.xlarge": 0.38, "g6.2xlarge": 0.45,
    "g6e.xlarge": 0.85,
}


class Prices(Strict):
    """Hourly prices behind `llmfleet.local.cost.estimate_hourly_cost`; the defaults cover the kit's
    usual types, and a stack's own entries override or add to them."""

    on_demand: dict[InstanceTypeName, Usd] = Field(default_factory=lambda: dict(ON_DEMAND_USD_HOUR))
    spot: dict[InstanceTypeName, Usd] = Field(default_factory=lambda: dict(SPOT_USD_HOUR))
    nat_gateway_hour: Usd = NAT_GATEWAY_USD_HOUR
    public_ipv4_hour: Usd = Field(0.005, description="per public IPv4 address, EIP too")
    gp3_gib_month: Usd = Field(0.08, description="EBS gp3 storage per GiB-month")
    # The cost report's second currency; rates move, so a stack sets the day's.
    pkr_per_usd: float = Field(280.0, gt=0, le=100_000,
                               description="Pakistani rupees per US dollar, for `llmfleet cost`")

    @field_validator("on_demand", "spot", mode="before")
    @classmethod
    def _keep_other_defaults(cls, value: object, info: ValidationInfo) -> object:
        # A stack that prices one type keeps the defaults for the others.
        defaults = ON_DEMAND_USD_HOUR if info.field_name == "on_demand" else SPOT_USD_HOUR
        return {**defaults, **value} if isinstance(value, dict) else value
