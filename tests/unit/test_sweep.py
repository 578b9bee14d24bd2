"""`llmfleet sweep`: against moto with planted leftovers of this stack, one of another stack and
one untagged, it lists exactly this stack's, deletes them only with --yes, and says what it
could not delete and why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from llmfleet import cli
from llmfleet.local import sweep

REGION = "eu-west-1"
STACK = "acme-prod"


def tagged(kind: str, stack: str) -> list[dict]:
    return [{"ResourceType": kind, "Tags": [{"Key": "llmfleet:stack", "Value": stack}]}]


class Planted:
    """Leftovers in moto's account: this stack's of every kind, and two that are not its."""

    def __init__(self) -> None:
        ec2 = self.ec2 = boto3.client("ec2", region_name=REGION)
        self.volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=20,
                                        TagSpecifications=tagged("volume", STACK))["VolumeId"]
        self.snapshot = ec2.create_snapshot(
            VolumeId=self.volume, TagSpecifications=tagged("snapshot", STACK))["SnapshotId"]
        self.address = ec2.allocate_address(
            Domain="vpc", TagSpecifications=tagged("elastic-ip", STACK))["AllocationId"]
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        self.interface = ec2.create_network_interface(
            SubnetId=subnet, TagSpecifications=tagged("network-interface", STACK)
        )["NetworkInterface"]["NetworkInterfaceId"]
        self.template = ec2.create_launch_template(
            LaunchTemplateName="acme-prod-gpu-template", LaunchTemplateData={},
            TagSpecifications=tagged("launch-template", STACK))["LaunchTemplate"][
            "LaunchTemplateId"]
        boto3.client("logs", region_name=REGION).create_log_group(
            logGroupName="acme-prod-drain-logs-1", tags={"llmfleet:stack": STACK})
        boto3.client("ecr", region_name=REGION).create_repository(
            repositoryName="acme-prod-edge", tags=[{"Key": "llmfleet:stack", "Value": STACK}])
        boto3.client("ssm", region_name=REGION).put_parameter(
            Name="/llmfleet/acme-prod/scaler-state", Value="{}", Type="String",
            Tags=[{"Key": "llmfleet:stack", "Value": STACK}])
        # Not this stack's: another stack's volume, and an untagged one.
        self.other = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=5,
                                       TagSpecifications=tagged("volume", "other-prod"))[
            "VolumeId"]
        self.untagged = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=5)["VolumeId"]

    def volumes(self) -> set[str]:
        return {v["VolumeId"] for v in self.ec2.describe_volumes()["Volumes"]}

    def ours(self) -> set[tuple[str, str]]:
        return {("volume", self.volume), ("snapshot", self.snapshot),
                ("elastic-ip", self.address), ("network-interface", self.interface),
                ("launch-template", self.template), ("log-group", "acme-prod-drain-logs-1"),
                ("ecr-repository", "acme-prod-edge"),
                ("ssm-parameter", "/llmfleet/acme-prod/scaler-state")}


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Planted]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield Planted()


def test_the_sweep_finds_this_stacks_leftovers_and_nothing_else(planted):
    found = list(sweep.find(boto3.session.Session(), STACK, [REGION]))

    assert all(isinstance(f, sweep.Leftover) for f in found)
    assert {(f.kind, f.id) for f in found} == planted.ours()


def test_without_yes_nothing_is_deleted_and_the_exit_says_leftovers_remain(planted, capsys):
    code = cli.main(["sweep", STACK, "--region", REGION, "--json"])

    listed = json.loads(capsys.readouterr().out)
    assert code == 1
    assert {(o["kind"], o["id"]) for o in listed} == planted.ours()
    assert not any(o["deleted"] for o in listed)
    assert planted.volume in planted.volumes()


def test_with_yes_this_stacks_leftovers_go_and_the_others_stay(planted, capsys):
    code = cli.main(["sweep", STACK, "--region", REGION, "--yes"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count(" deleted") == len(planted.ours())
    assert planted.volumes() == {planted.other, planted.untagged}
    assert list(sweep.find(boto3.session.Session(), STACK, [REGION])) == []
    # Swept clean: a second run finds nothing and says so.
    assert cli.main(["sweep", STACK, "--region", REGION]) == 0
    assert "nothing tagged llmfleet:stack=acme-prod" in capsys.readouterr().out


def test_what_cannot_be_deleted_is_reported_with_aws_reason_and_the_rest_goes_on(planted):
    ec2 = planted.ec2
    # A volume in use cannot be deleted: attach it to an instance first.
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    ec2.attach_volume(VolumeId=planted.volume, InstanceId=instance["InstanceId"],
                      Device="/dev/sdf")
    found = [f for f in sweep.find(boto3.session.Session(), STACK, [REGION])
             if isinstance(f, sweep.Leftover)]

    outcomes = {(o.leftover.kind, o.leftover.id): o
                for o in sweep.delete(boto3.session.Session(), found)}

    volume = outcomes["volume", planted.volume]
    assert not volume.deleted and volume.error.startswith("VolumeInUse")
    assert all(o.deleted for key, o in outcomes.items() if key != ("volume", planted.volume))


@pytest.fixture
def pulumi_calls(tmp_path, monkeypatch) -> Path:
    """The Pulumi CLI cannot run here: a stand-in on PATH records how teardown calls it."""
    calls = tmp_path / "pulumi-calls"
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    return calls


def test_teardown_destroys_the_stack_then_sweeps_what_is_left(planted, pulumi_calls, capsys):
    code = cli.main(["teardown", STACK, "--region", REGION, "--yes"])

    assert code == 0, capsys.readouterr()
    assert pulumi_calls.read_text().split() == ["destroy", "--stack", STACK, "--non-interactive",
                                         "--yes"]
    assert planted.volumes() == {planted.other, planted.untagged}


def test_teardown_without_yes_only_previews_and_lists(planted, pulumi_calls):
    assert cli.main(["teardown", STACK, "--region", REGION]) == 1  # leftovers remain
    assert "--preview-only" in pulumi_calls.read_text().split()
    assert planted.volume in planted.volumes()
