"""The Network component: the VPC and subnets the edge and the GPU nodes launch into."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from llmfleet.config import NetworkSpec


@dataclass(frozen=True)
class NetworkArgs:
    spec: NetworkSpec
    tags: dict[str, str]


class Network(pulumi.ComponentResource):
    """An existing VPC and subnets from config, or a new VPC across `az_count` AZs.

    A new VPC gets one public subnet per AZ (internet gateway route) and, with `nat: true`, one
    private subnet per AZ routed through a single NAT gateway (about USD 32/month plus USD 0.045
    per GB, and a single-AZ dependency for outbound traffic) and an S3 gateway endpoint (free),
    so container layers from the stack's ECR cache do not pay the NAT's per-GB charge. Without
    NAT, GPU nodes use the public subnets with a public address for outbound traffic only: their
    security group admits nothing from the internet.

    Outputs: `vpc_id`, `public_subnet_ids` (the edge), `node_subnet_ids` (the GPU nodes), and
    `nodes_public` (whether GPU nodes need a public address to reach the internet).
    """

    vpc_id: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    node_subnet_ids: pulumi.Output[list[str]]
    nodes_public: bool

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("llmfleet:index:Network", name, None, opts)
        spec = args.spec
        if spec.vpc_id is not None:
            self.vpc_id = pulumi.Output.from_input(spec.vpc_id)
            self.public_subnet_ids = pulumi.Output.from_input(list(spec.public_subnet_ids))
            private = list(spec.private_subnet_ids)
            self.node_subnet_ids = pulumi.Output.from_input(
                private or list(spec.public_subnet_ids))
            self.nodes_public = not private
        else:
            self._create(name, spec, args.tags)
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "node_subnet_ids": self.node_subnet_ids,
                "nodes_public": self.nodes_public,
            }
        )

    def _create(self, name: str, spec: NetworkSpec, tags: dict[str, str]) -> None:
        child = pulumi.ResourceOptions(parent=self)

        def tagged(suffix: str) -> dict[str, str]:
            return {**tags, "Name": f"{name}-{suffix}"}

        # Local Zones and Wavelength Zones are opt-in and mostly lack GPU types: leave them out.
        zones = aws.get_availability_zones_output(
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).names
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=spec.cidr, enable_dns_support=True,
                          enable_dns_hostnames=True, tags=tagged("vpc"), opts=child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tagged("igw"),
                                          opts=child)
        public_table = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id, tags=tagged("public"), opts=child,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
        )
        public_cidrs, private_cidrs = spec.subnet_cidrs()
        public = [
            self._subnet(f"{name}-public-{i}", vpc, _zone(zones, i, spec.az_count), cidr,
                         public_table, tagged(f"public-{i}"), child)
            for i, cidr in enumerate(public_cidrs)
        ]
        self.vpc_id = vpc.id
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])
        self.nodes_public = not spec.nat
        if not spec.nat:
            self.node_subnet_ids = self.public_subnet_ids
            return

        address = aws.ec2.Eip(f"{name}-nat", domain="vpc", tags=tagged("nat"), opts=child)
        nat = aws.ec2.NatGateway(f"{name}-nat", allocation_id=address.allocation_id,
                                 subnet_id=public[0].id, tags=tagged("nat"),
                                 opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]))
        private_table = aws.ec2.RouteTable(
            f"{name}-private", vpc_id=vpc.id, tags=tagged("private"), opts=child,
            routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
        )
        private = [
            self._subnet(f"{name}-private-{i}", vpc, _zone(zones, i, spec.az_count), cidr,
                         private_table, tagged(f"private-{i}"), child)
            for i, cidr in enumerate(private_cidrs)
        ]
        self.node_subnet_ids = pulumi.Output.all(*[s.id for s in private])
        # ECR serves image layers from S3: through this free endpoint a node's pulls (tens of
        # GB in a scale-out) skip the NAT gateway and its USD 0.045 per GB.
        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region
        aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=vpc.id, vpc_endpoint_type="Gateway",
            service_name=region.apply(lambda r: f"com.amazonaws.{r}.s3"),
            route_table_ids=[private_table.id], tags=tagged("s3"), opts=child)

    @staticmethod
    def _subnet(
        name: str,
        vpc: aws.ec2.Vpc,
        zone: pulumi.Output[str],
        cidr: str,
        table: aws.ec2.RouteTable,
        tags: dict[str, str],
        opts: pulumi.ResourceOptions,
    ) -> aws.ec2.Subnet:
        # Launch templates decide per role whether an instance gets a public address.
        subnet = aws.ec2.Subnet(name, vpc_id=vpc.id, cidr_block=cidr, availability_zone=zone,
                                map_public_ip_on_launch=False, tags=tags, opts=opts)
        aws.ec2.RouteTableAssociation(name, subnet_id=subnet.id, route_table_id=table.id,
                                      opts=opts)
        return subnet


def _zone(zones: pulumi.Output[list[str]], index: int, count: int) -> pulumi.Output[str]:
    def pick(names: list[str]) -> str:
        if len(names) < count:
            raise pulumi.RunError(
                f"network.az_count is {count}, but this region offers {len(names)} zones: {names}")
        return sorted(names)[index]

    return zones.apply(pick)
