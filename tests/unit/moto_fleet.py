"""Moto's EC2 and Auto Scaling with one stack's two GPU groups, as infra/ builds them: what
the Lambdas' tests (drain, scaler) run against."""

from __future__ import annotations

from typing import Any

import boto3

REGION = "us-east-1"
STACK = "acme-prod"
SPOT_GROUP = "acme-spot"
ON_DEMAND_GROUP = "acme-ondemand"


class MotoFleet:
    """This stack's two GPU groups in moto's account (inside `mock_aws`)."""

    def __init__(self) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.autoscaling = boto3.client("autoscaling", region_name=REGION)
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(
            VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
        self.ec2.create_launch_template(LaunchTemplateName="gpu", LaunchTemplateData={
            "ImageId": "ami-12c6146b", "InstanceType": "g6.xlarge"})

    def spot_group(self, *, desired: int = 2, max_size: int = 4, rebalance: bool = True,
                   stack: str = STACK, name: str = SPOT_GROUP, min_size: int = 0) -> None:
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=min_size, MaxSize=max_size,
            DesiredCapacity=desired, CapacityRebalance=rebalance, VPCZoneIdentifier=self.subnet,
            MixedInstancesPolicy={
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {"LaunchTemplateName": "gpu",
                                                    "Version": "$Latest"},
                    "Overrides": [{"InstanceType": "g6.xlarge", "WeightedCapacity": "1"}],
                },
                "InstancesDistribution": {"OnDemandBaseCapacity": 0,
                                          "OnDemandPercentageAboveBaseCapacity": 0},
            },
            Tags=self._tags(stack))

    def on_demand_group(self, *, desired: int = 0, max_size: int = 2) -> None:
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=ON_DEMAND_GROUP, MinSize=0, MaxSize=max_size,
            DesiredCapacity=desired, VPCZoneIdentifier=self.subnet,
            LaunchTemplate={"LaunchTemplateName": "gpu", "Version": "$Latest"},
            Tags=self._tags(STACK))

    def instances(self, group: str) -> list[str]:
        return sorted(i["InstanceId"] for i in self.group(group)["Instances"])

    def group(self, name: str) -> dict[str, Any]:
        [found] = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return found

    def desired(self) -> tuple[int, int]:
        return (self.group(SPOT_GROUP)["DesiredCapacity"],
                self.group(ON_DEMAND_GROUP)["DesiredCapacity"])

    def tags(self, instance_id: str) -> dict[str, str]:
        [reservation] = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return {t["Key"]: t["Value"] for t in reservation["Instances"][0].get("Tags", [])}

    @staticmethod
    def _tags(stack: str) -> list[dict[str, Any]]:
        return [{"Key": "llmfleet:stack", "Value": stack, "PropagateAtLaunch": True}]
