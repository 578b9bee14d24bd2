"""Security group rules: every port and every peer, and port 22 nowhere."""

from __future__ import annotations

import pytest
import yaml
from infra_helpers import (
    ALL_STACKS,
    EGRESS,
    INGRESS,
    LAUNCH_TEMPLATE,
    SECURITY_GROUP,
    stack_config_env,
)

from llmfleet.config import from_pulumi_config_env
from llmfleet.observability.prometheus import aws_prometheus_config

# The monitor's scrapes of the edge, by rule label: edge exporter, gateway, nginx and Redis
# exporters (nginx on the edge's private address, forwarding /metrics only).
EDGE_METRICS = {"edge-exporter": 9180, "gateway": 8090, "nginx-exporter": 9113,
                "redis-exporter": 9121}


def _rules(mocks, kind: str, stack_prefix: str) -> set[tuple[str, int, str]]:
    """(group, port, peer) for every rule: peer is a group role or a CIDR block."""
    roles = {mocks.ids[SECURITY_GROUP, f"{stack_prefix}-sg-{role}"]: role
             for role in ("edge", "gpu", "monitor")}
    found = set()
    for rule in mocks.of_type(kind):
        inputs = rule.inputs
        assert inputs["ipProtocol"] == "tcp"
        assert inputs["fromPort"] == inputs["toPort"], "one port per rule"
        peer = (roles.get(inputs.get("referencedSecurityGroupId"))
                or inputs.get("cidrIpv4") or inputs.get("cidrIpv6"))
        found.add((roles[inputs["securityGroupId"]], int(inputs["fromPort"]), peer))
    return found


def test_gpu_nodes_take_vllm_from_the_edge_and_metrics_from_the_monitor_only(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    ingress = _rules(mocks, INGRESS, "startup-prod")
    assert {r for r in ingress if r[0] == "gpu"} == {
        ("gpu", 8000, "edge"),
        ("gpu", 8000, "monitor"),
        ("gpu", 9400, "monitor"),
        ("gpu", 9100, "monitor"),
    }
    assert {r for r in ingress if r[0] == "monitor"} == set()


def test_edge_takes_web_traffic_from_the_configured_cidrs_only(program, mocks):
    edge = {"allowed_cidrs": ["198.51.100.0/24", "2001:db8::/32"]}
    program.run(stack_config_env("example", edge=edge), stack="example")

    assert {r for r in _rules(mocks, INGRESS, "acme-prod") if r[0] == "edge"} == {
        ("edge", 80, "198.51.100.0/24"),
        ("edge", 443, "198.51.100.0/24"),
        ("edge", 80, "2001:db8::/32"),
        ("edge", 443, "2001:db8::/32"),
        *(("edge", port, "monitor") for port in EDGE_METRICS.values()),
    }
    v6 = [r.inputs for r in mocks.of_type(INGRESS) if "cidrIpv6" in r.inputs]
    assert len(v6) == 2 and all("cidrIpv4" not in r for r in v6)


def test_by_default_the_edge_accepts_only_the_monitors_scrapes(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    assert {r for r in _rules(mocks, INGRESS, "acme-prod") if r[0] == "edge"} == {
        ("edge", port, "monitor") for port in EDGE_METRICS.values()}


@pytest.mark.parametrize("label", EDGE_METRICS)
def test_each_edge_metrics_port_is_open_to_the_monitor_group_only(program, mocks, label):
    program.run(stack_config_env("startup-prod", edge={
        "allowed_cidrs": ["0.0.0.0/0"],
        "tls": {"mode": "acme", "domain": "api.startup.example.com",
                "email": "ops@startup.example.com"}}), stack="startup-prod")

    port = EDGE_METRICS[label]
    rule = mocks.one(INGRESS, f"startup-prod-sg-edge-in-{label}-from-monitor")
    assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (port, port, "tcp")
    assert rule["securityGroupId"] == mocks.ids[SECURITY_GROUP, "startup-prod-sg-edge"]
    assert rule["referencedSecurityGroupId"] == mocks.ids[SECURITY_GROUP,
                                                          "startup-prod-sg-monitor"]
    assert "cidrIpv4" not in rule and "cidrIpv6" not in rule
    # Even a public API opens the metrics port to no address block, only to the monitor.
    peers = {peer for group, p, peer in _rules(mocks, INGRESS, "startup-prod") if p == port}
    assert peers == {"monitor"}
    egress = mocks.one(EGRESS, f"startup-prod-sg-monitor-out-{label}-to-edge")
    assert (egress["fromPort"], egress["securityGroupId"], egress["referencedSecurityGroupId"]) == (
        port, mocks.ids[SECURITY_GROUP, "startup-prod-sg-monitor"],
        mocks.ids[SECURITY_GROUP, "startup-prod-sg-edge"])


def test_the_edge_rules_cover_every_port_the_monitor_scrapes_on_the_edge():
    config = from_pulumi_config_env(stack_config_env("example"), "example")
    scrape = yaml.safe_load(aws_prometheus_config(config, region="us-east-1", stack="example"))
    edge_ports = {sd["port"] for job in scrape["scrape_configs"]
                  for sd in job.get("ec2_sd_configs", [])
                  if ["edge"] in (f["values"] for f in sd["filters"])}
    assert edge_ports == set(EDGE_METRICS.values())


def test_egress_is_only_what_each_role_needs(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    assert _rules(mocks, EGRESS, "acme-prod") == {
        ("gpu", 443, "0.0.0.0/0"),
        ("edge", 8000, "gpu"),
        ("edge", 443, "0.0.0.0/0"),
        ("edge", 80, "0.0.0.0/0"),
        ("monitor", 8000, "gpu"),
        ("monitor", 9400, "gpu"),
        ("monitor", 9100, "gpu"),
        *(("monitor", port, "edge") for port in EDGE_METRICS.values()),
        ("monitor", 443, "0.0.0.0/0"),
        ("monitor", 80, "0.0.0.0/0"),
    }


def test_a_configured_vllm_port_moves_every_rule_that_carries_it(program, mocks):
    gpu_node = {"vllm_port": 8080}
    program.run(stack_config_env("example", gpu_node=gpu_node), stack="example")

    rules = _rules(mocks, INGRESS, "acme-prod") | _rules(mocks, EGRESS, "acme-prod")
    assert ("gpu", 8080, "edge") in rules and ("edge", 8080, "gpu") in rules
    assert not any(port == 8000 for _, port, _ in rules)


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_port_22_is_open_nowhere(program, mocks, stack):
    program.run(stack_config_env(stack), stack=stack)

    rules = [r.inputs for r in mocks.of_type(INGRESS)]
    assert rules
    for rule in rules:
        assert rule["ipProtocol"] != "-1", "all protocols opens 22 too"
        assert not int(rule["fromPort"]) <= 22 <= int(rule["toPort"]), rule
    for group in mocks.of_type(SECURITY_GROUP):
        assert "ingress" not in group.inputs, "inline rules would bypass these checks"
    # No key pair either: shells go through SSM Session Manager.
    assert all("keyName" not in lt.inputs for lt in mocks.of_type(LAUNCH_TEMPLATE))
