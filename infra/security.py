"""The SecurityGroups component: who may talk to the edge, the GPU nodes and the monitor."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from llmfleet.config.aws import DCGM_EXPORTER_PORT, NODE_EXPORTER_PORT
from llmfleet.services import EDGE_HOST_PORTS, HTTPS

ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class SecurityGroupsArgs:
    vpc_id: pulumi.Input[str]
    vllm_port: int
    edge_cidrs: tuple[str, ...]
    tags: dict[str, str]


class SecurityGroups(pulumi.ComponentResource):
    """Three groups, each rule its own resource so every one is visible in a diff:

    - GPU nodes: vLLM's port from the edge only; vLLM's /metrics, DCGM (9400) and node exporter
      (9100) from the monitor only; out: HTTPS (images, weights, SSM, AWS APIs).
    - edge: HTTP and HTTPS (`EdgePorts.http`, `.https`) from `edge.allowed_cidrs` only (none
      by default); the metrics ports (`EdgePorts.scraped()` in llmfleet.services: nginx on
      the private address, forwarding /metrics only) from the monitor only; out: vLLM's port
      to the GPU nodes, HTTPS (AWS APIs, PyPI, S3) and HTTP (Ubuntu's package mirrors).
    - monitor (the Monitor component's instance): nothing in (reached through SSM port
      forwarding, which needs no inbound rule); out: the scrape ports on the GPU nodes and on
      the edge, HTTPS (AWS APIs, Grafana's packages, Slack, PagerDuty) and HTTP (Ubuntu's
      package mirrors).

    Port 22 is open nowhere: shells go through SSM Session Manager. Outputs: `edge_id`,
    `gpu_id`, `monitor_id`.
    """

    edge_id: pulumi.Output[str]
    gpu_id: pulumi.Output[str]
    monitor_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:SecurityGroups", name, None, opts)
        self._prefix = name
        self._tags = args.tags
        child = pulumi.ResourceOptions(parent=self)
        groups = {
            role: aws.ec2.SecurityGroup(
                f"{name}-{role}", vpc_id=args.vpc_id, description=description,
                tags={**args.tags, "Name": f"{name}-{role}"}, opts=child)
            for role, description in [
                ("edge", "llmfleet edge: the API from allowed CIDRs"),
                ("gpu", "llmfleet GPU nodes: vLLM from the edge, metrics from the monitor"),
                ("monitor", "llmfleet monitor: scrapes the GPU nodes"),
            ]
        }
        self._groups = groups
        port = args.vllm_port

        self._ingress("gpu", "vllm-from-edge", port, source="edge")
        for label, scraped in [("vllm-metrics", port), ("dcgm", DCGM_EXPORTER_PORT),
                               ("node-exporter", NODE_EXPORTER_PORT)]:
            self._ingress("gpu", f"{label}-from-monitor", scraped, source="monitor")
        self._egress("gpu", "https", HTTPS, cidr=ANYWHERE)

        for cidr in args.edge_cidrs:
            for web in (EDGE_HOST_PORTS.http, EDGE_HOST_PORTS.https):
                self._ingress("edge", f"{web}-from-{_slug(cidr)}", web, cidr=cidr)
        for label, scraped in EDGE_HOST_PORTS.scraped().items():
            self._ingress("edge", f"{label}-from-monitor", scraped, source="monitor")
        self._egress("edge", "vllm-to-gpu", port, source="gpu")
        self._egress("edge", "https", HTTPS, cidr=ANYWHERE)
        self._egress("edge", "http", 80, cidr=ANYWHERE)

        for label, scraped in [("vllm-metrics", port), ("dcgm", DCGM_EXPORTER_PORT),
                               ("node-exporter", NODE_EXPORTER_PORT)]:
            self._egress("monitor", f"{label}-to-gpu", scraped, source="gpu")
        for label, scraped in EDGE_HOST_PORTS.scraped().items():
            self._egress("monitor", f"{label}-to-edge", scraped, source="edge")
        self._egress("monitor", "https", HTTPS, cidr=ANYWHERE)
        self._egress("monitor", "http", 80, cidr=ANYWHERE)

        self.edge_id, self.gpu_id, self.monitor_id = (
            groups[role].id for role in ("edge", "gpu", "monitor"))
        self.register_outputs(
            {"edge_id": self.edge_id, "gpu_id": self.gpu_id, "monitor_id": self.monitor_id}
        )

    def _ingress(self, role: str, label: str, port: int, *, source: str | None = None,
                 cidr: str | None = None) -> None:
        self._rule(aws.vpc.SecurityGroupIngressRule, f"{role}-in-{label}", role, port, source,
                   cidr)

    def _egress(self, role: str, label: str, port: int, *, source: str | None = None,
                cidr: str | None = None) -> None:
        self._rule(aws.vpc.SecurityGroupEgressRule, f"{role}-out-{label}", role, port, source,
                   cidr)

    def _rule(self, kind: type, label: str, role: str, port: int, source: str | None,
              cidr: str | None) -> None:
        """One TCP port, to or from one peer: another of these groups, or a CIDR block."""
        if source is not None:
            peer = {"referenced_security_group_id": self._groups[source].id}
        elif ipaddress.ip_network(cidr or "").version == 6:
            peer = {"cidr_ipv6": cidr}
        else:
            peer = {"cidr_ipv4": cidr}
        name = f"{self._prefix}-{label}"
        kind(name, security_group_id=self._groups[role].id, ip_protocol="tcp", from_port=port,
             to_port=port, description=label, tags={**self._tags, "Name": name},
             opts=pulumi.ResourceOptions(parent=self), **peer)


def _slug(cidr: str) -> str:
    """A CIDR as part of a resource name: stable, so reordering the list replaces nothing."""
    return re.sub(r"[^0-9a-zA-Z]+", "-", cidr).strip("-")
