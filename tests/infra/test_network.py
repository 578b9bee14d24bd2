"""The Network component: a created VPC (with or without NAT) or an existing one from config."""

from __future__ import annotations

from infra_helpers import GROUP, LAUNCH_TEMPLATE, SUBNET, ZONES, stack_config_env

VPC = "aws:ec2/vpc:Vpc"
NAT = "aws:ec2/natGateway:NatGateway"


def _subnet_ids(mocks, names: list[str]) -> list[str]:
    return [mocks.ids[SUBNET, name] for name in names]


def test_default_network_is_public_subnets_in_two_zones_and_no_nat(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    assert mocks.one(VPC, "acme-prod-net-vpc")["cidrBlock"] == "10.42.0.0/16"
    public = ["acme-prod-net-public-0", "acme-prod-net-public-1"]
    assert mocks.names(SUBNET) == public
    subnets = [mocks.one(SUBNET, name) for name in public]
    assert [s["availabilityZone"] for s in subnets] == ZONES[:2]
    assert [s["cidrBlock"] for s in subnets] == ["10.42.0.0/17", "10.42.128.0/17"]
    assert mocks.of_type(NAT) == []
    # Without NAT the GPU nodes share the public subnets and get a public address for
    # outbound traffic only (their security group is tested on its own).
    spot = mocks.one(GROUP, "acme-prod-gpu-spot")
    assert spot["vpcZoneIdentifiers"] == _subnet_ids(mocks, public)
    nic = mocks.one(LAUNCH_TEMPLATE, "acme-prod-gpu-template")["networkInterfaces"][0]
    assert nic["associatePublicIpAddress"] == "true"


def test_nat_puts_gpu_nodes_in_private_subnets_without_public_addresses(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    assert len(mocks.of_type(NAT)) == 1
    private = ["startup-prod-net-private-0", "startup-prod-net-private-1"]
    public = ["startup-prod-net-public-0", "startup-prod-net-public-1"]
    assert mocks.names(SUBNET) == sorted(public + private)
    private_table = mocks.one("aws:ec2/routeTable:RouteTable", "startup-prod-net-private")
    assert private_table["routes"] == [{
        "cidrBlock": "0.0.0.0/0", "natGatewayId": mocks.ids[NAT, "startup-prod-net-nat"]}]
    for group in ("startup-prod-gpu-spot", "startup-prod-gpu-ondemand"):
        assert mocks.one(GROUP, group)["vpcZoneIdentifiers"] == _subnet_ids(mocks, private)
    nic = mocks.one(LAUNCH_TEMPLATE, "startup-prod-gpu-template")["networkInterfaces"][0]
    assert nic["associatePublicIpAddress"] == "false"
    # The edge stays in a public subnet either way: the first, where its Redis volume is.
    edge = mocks.one(GROUP, "startup-prod-edge-group")
    assert edge["vpcZoneIdentifiers"] == _subnet_ids(mocks, public)[:1]


def test_an_existing_vpc_is_used_as_given_and_nothing_is_created(program, mocks):
    network = {
        "vpc_id": "vpc-0123456789abcdef0",
        "public_subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"],
        "private_subnet_ids": ["subnet-0bbbbbbbbbbbbbbb1"],
    }
    exports = program.run(stack_config_env("example", network=network), stack="example")

    assert exports["vpc_id"] == "vpc-0123456789abcdef0"
    assert mocks.of_type(VPC) == mocks.of_type(SUBNET) == []
    assert "aws:index/getAvailabilityZones:getAvailabilityZones" not in mocks.calls
    sg = mocks.one("aws:ec2/securityGroup:SecurityGroup", "acme-prod-sg-gpu")
    assert sg["vpcId"] == "vpc-0123456789abcdef0"
    assert mocks.one(GROUP, "acme-prod-gpu-spot")["vpcZoneIdentifiers"] == [
        "subnet-0bbbbbbbbbbbbbbb1"]
    assert mocks.one(GROUP, "acme-prod-edge-group")["vpcZoneIdentifiers"] == network[
        "public_subnet_ids"][:1]
