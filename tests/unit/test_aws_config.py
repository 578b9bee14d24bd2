"""The AWS config sections: safe, cheap defaults and errors that name the key and what is
allowed."""

from __future__ import annotations

import pytest

from llmfleet.config import ConfigError, FleetConfig, NetworkSpec, validate
from llmfleet.config.aws import (
    DLAMI_PARAMETER,
    UBUNTU_ARM64_PARAMETER,
    UBUNTU_PARAMETER,
    architecture,
)


def _problems(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(data, "test")
    return str(caught.value)


def test_defaults_are_a_new_vpc_without_nat_and_an_edge_open_to_nobody():
    config = FleetConfig()
    assert config.network.vpc_id is None and config.network.nat is False
    assert config.network.subnet_cidrs() == (["10.42.0.0/17", "10.42.128.0/17"], [])
    assert config.edge.allowed_cidrs == ()
    assert config.gpu_node.ami_parameter == DLAMI_PARAMETER
    assert config.gpu_node.token_parameter("acme-prod") == "/llmfleet/acme-prod/hf-token"
    assert config.on_demand.min_size == 0


def test_the_smallest_network_still_holds_six_zones_with_nat():
    public, private = NetworkSpec(cidr="10.0.0.0/24", az_count=6, nat=True).subnet_cidrs()
    assert public[0] == "10.0.0.0/28" and private[-1] == "10.0.0.176/28"


def test_nat_adds_one_private_subnet_per_zone_in_the_same_network():
    network = NetworkSpec(cidr="10.0.0.0/20", az_count=3, nat=True)
    public, private = network.subnet_cidrs()
    # Six subnets need three more prefix bits: /23 each.
    assert public == ["10.0.0.0/23", "10.0.2.0/23", "10.0.4.0/23"]
    assert private == ["10.0.6.0/23", "10.0.8.0/23", "10.0.10.0/23"]


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"network": {"cidr": "10.0.0.0/8"}}, "network.cidr", "IPv4 network from /16 to /24"),
        ({"network": {"public_subnet_ids": ["subnet-0123456789abcdef0"]}}, "network",
         "subnet ids need vpc_id"),
        ({"network": {"vpc_id": "vpc-0123456789abcdef0"}}, "network",
         "needs public_subnet_ids"),
        ({"network": {"vpc_id": "vpc-1"}}, "network.vpc_id", "a VPC id such as vpc-"),
        ({"network": {"az_count": 1}}, "network.az_count", "greater than or equal to 2"),
        ({"edge": {"allowed_cidrs": ["everyone"]}}, "edge.allowed_cidrs",
         "not a CIDR block such as 203.0.113.0/24"),
        ({"edge": {"instance_type": "p5.48xlarge"}}, "edge.instance_type", "needs no GPU"),
        ({"gpu_node": {"vllm_port": 9100}}, "gpu_node.vllm_port", "belong to the exporters"),
        ({"gpu_node": {"root_volume_gib": 40}}, "gpu_node.root_volume_gib",
         "greater than or equal to 80"),
        ({"gpu_node": {"cold_start_s": 10}}, "gpu_node.cold_start_s",
         "greater than or equal to 60"),
        ({"on_demand": {"min_size": 3, "max_size": 1}}, "on_demand", "min_size <= max_size"),
        ({"prices": {"on_demand": {"G5": 1.0}}}, "prices.on_demand", "'G5' is not an allowed name"),
        ({"prices": {"bananas": 1}}, "prices.bananas", "unknown key; allowed keys here: "
         "on_demand, spot, nat_gateway_hour, public_ipv4_hour, gp3_gib_month"),
    ],
)
def test_each_bad_value_names_the_key_and_what_is_allowed(data, key, allowed):
    message = _problems(data)
    assert f"  - {key}: got " in message
    assert allowed in message


def test_a_stack_that_prices_one_type_keeps_the_other_defaults():
    prices = validate({"prices": {"spot": {"g5.xlarge": 0.5, "g6e.2xlarge": 1.1}}}, "t").prices
    assert prices.spot["g5.xlarge"] == 0.5
    assert prices.spot["g6e.2xlarge"] == 1.1
    assert prices.spot["g4dn.xlarge"] == FleetConfig().prices.spot["g4dn.xlarge"]


def test_v100_nodes_are_refused_before_anything_launches():
    # The GPU nodes' AMI (open-source NVIDIA kernel modules) cannot drive a V100.
    message = _problems({"fleet": {"instance_types": [{"type": "p3.2xlarge"}]}})
    assert '  - fleet.instance_types[0].type: got "p3.2xlarge"' in message
    assert "allowed families: g4dn, g5, g6, g6e, gr6, p4d, p4de, p5, p5e" in message
    assert "V100 needs NVIDIA's proprietary driver" in message


def test_the_monitor_is_on_and_cheap_by_default_with_no_destination_until_named():
    monitor = FleetConfig().monitor
    assert monitor.enabled and monitor.instance_type == "t4g.small"
    assert monitor.architecture == "arm64" and monitor.image_parameter == UBUNTU_ARM64_PARAMETER
    assert (monitor.data_volume_gib, monitor.retention_days) == (20, 15)
    assert monitor.slack_webhook_parameter is None
    assert monitor.pagerduty_routing_key_parameter is None
    assert monitor.grafana_password_parameter("acme-prod") == (
        "/llmfleet/acme-prod/grafana-admin-password")
    assert validate({"monitor": {"instance_type": "t3.small"}}, "t").monitor.image_parameter == (
        UBUNTU_PARAMETER)


@pytest.mark.parametrize(("instance_type", "arch"), [
    ("t4g.small", "arm64"), ("m7g.large", "arm64"), ("c6gn.xlarge", "arm64"),
    ("im4gn.large", "arm64"), ("a1.large", "arm64"), ("t3.small", "amd64"),
    ("t3a.small", "amd64"), ("m7i-flex.large", "amd64"), ("g4ad.xlarge", "amd64")])
def test_graviton_types_are_told_apart_by_the_g_after_the_generation(instance_type, arch):
    assert architecture(instance_type) == arch


def test_every_bad_monitor_value_is_named_in_one_pass():
    message = _problems({"monitor": {
        "instance_type": "g5.xlarge", "data_volume_gib": 2, "retention_days": 0,
        "slack_webhook_parameter": "https://hooks.slack.com/services/T0/B0/x",
        "grafana_admin_password_parameter": "grafana", "retension_days": 30}})
    for key, allowed in [
        ("monitor.instance_type", "the monitor needs no GPU"),
        ("monitor.data_volume_gib", "greater than or equal to 4"),
        ("monitor.retention_days", "greater than or equal to 1"),
        ("monitor.slack_webhook_parameter", "an SSM parameter path starting with '/'"),
        ("monitor.grafana_admin_password_parameter", "an SSM parameter path starting with '/'"),
        ("monitor.retension_days", "unknown key"),
    ]:
        assert f"  - {key}: got " in message
        assert allowed in message


@pytest.mark.parametrize(("monitor", "problem"), [
    ({"instance_type": "t3.small", "ami_parameter": UBUNTU_ARM64_PARAMETER},
     "ami_parameter names an image for another architecture than instance_type t3.small"),
    ({"ami_parameter": UBUNTU_PARAMETER}, "another architecture than instance_type t4g.small"),
    ({"slack_webhook_parameter": "/a/b", "pagerduty_routing_key_parameter": "/a/b"},
     "must be different parameters"),
])
def test_the_monitors_image_and_parameters_must_fit_together(monitor, problem):
    message = _problems({"monitor": monitor})
    assert "  - monitor: got " in message and problem in message
