"""Security group rules: every port and every peer, and port 22 nowhere."""

from __future__ import annotations

import pytest
from infra_helpers import (
    ALL_STACKS,
    EGRESS,
    INGRESS,
    LAUNCH_TEMPLATE,
    SECURITY_GROUP,
    stack_config_env,
)


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
    }
    v6 = [r.inputs for r in mocks.of_type(INGRESS) if "cidrIpv6" in r.inputs]
    assert len(v6) == 2 and all("cidrIpv4" not in r for r in v6)


def test_by_default_the_edge_accepts_nothing(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    assert {r for r in _rules(mocks, INGRESS, "acme-prod") if r[0] == "edge"} == set()


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
        ("monitor", 443, "0.0.0.0/0"),
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
