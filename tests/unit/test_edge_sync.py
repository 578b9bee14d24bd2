"""The edge's upstream sync agent: fleet membership from AWS (moto), checked with the real
`nginx -t`, reloaded only on change, and never replacing a good config with a bad one."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from llmfleet.config import FleetConfig, validate
from llmfleet.edge.nginx import GatewayHook, MetricsProxy, NginxPaths
from llmfleet.edge.sync import (
    DRAINING_TAG,
    Member,
    Outcome,
    Syncer,
    list_members,
    main,
    upstreams_for,
)

REGION = "us-east-1"


@pytest.fixture
def aws() -> Iterator[tuple[object, object]]:
    """Two GPU groups in a moto account: `spot` with 2 instances, `ondemand` with 1."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        autoscaling = boto3.client("autoscaling", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24",
                                   AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
        for name, instance_type, count in (("spot", "g5.xlarge", 2), ("ondemand", "g6.xlarge", 1)):
            ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
                "ImageId": "ami-12c6146b", "InstanceType": instance_type})
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=name, MinSize=0, MaxSize=4, DesiredCapacity=count,
                LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
                VPCZoneIdentifier=subnet)
        yield autoscaling, ec2


def _instances(autoscaling, group: str) -> list[str]:
    [found] = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"]
    return sorted(i["InstanceId"] for i in found["Instances"])


def test_members_of_both_groups_come_with_private_ips_types_and_drain_tags(aws):
    autoscaling, ec2 = aws
    spot = _instances(autoscaling, "spot")
    ec2.create_tags(Resources=[spot[0]], Tags=[{"Key": DRAINING_TAG, "Value": "true"}])
    autoscaling.enter_standby(InstanceIds=[spot[1]], AutoScalingGroupName="spot",
                              ShouldDecrementDesiredCapacity=True)

    members = {m.instance_id: m for m in list_members(autoscaling, ec2, ["spot", "ondemand"])}

    assert set(members) == {*spot, *_instances(autoscaling, "ondemand")}
    assert members[spot[0]].draining and members[spot[0]].lifecycle_state == "InService"
    assert members[spot[1]].lifecycle_state == "Standby"
    assert {m.instance_type for m in members.values()} == {"g5.xlarge", "g6.xlarge"}
    assert all(m.private_ip and m.private_ip.startswith("10.0.1.") for m in members.values())


def test_an_empty_fleet_lists_no_members(aws):
    autoscaling, ec2 = aws
    for group in ("spot", "ondemand"):
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)
    assert list_members(autoscaling, ec2, ["spot", "ondemand"]) == []


def _member(instance_id: str, state: str, draining: bool = False,
            ip: str | None = "10.0.0.1") -> Member:
    return Member(instance_id, state, ip, "g5.xlarge", draining)


def test_in_service_serves_terminating_and_draining_go_down_the_rest_stay_out():
    members = [
        _member("i-c", "InService", ip="10.0.0.3"),
        _member("i-a", "InService", draining=True, ip="10.0.0.1"),
        _member("i-b", "Terminating:Wait", ip="10.0.0.2"),
        _member("i-d", "Terminating", ip="10.0.0.4"),
        _member("i-e", "Pending"),
        _member("i-f", "Warmed:Running"),
        _member("i-g", "Standby"),
        _member("i-h", "InService", ip=None),
    ]
    upstreams = upstreams_for(members, port=8000)
    assert [(u.name, u.address, u.down) for u in upstreams] == [
        ("i-a", "10.0.0.1:8000", True),
        ("i-b", "10.0.0.2:8000", True),
        ("i-c", "10.0.0.3:8000", False),
        ("i-d", "10.0.0.4:8000", True),
    ]
    assert upstreams[0].instance_type == "g5.xlarge"


class Reloads:
    """Stands in for `systemctl reload nginx`, which must not touch a system nginx here."""

    def __init__(self, returncode: int = 0) -> None:
        self.count = 0
        self.returncode = returncode

    def __call__(self) -> subprocess.CompletedProcess:
        self.count += 1
        return subprocess.CompletedProcess(["reload"], self.returncode, "", "")


def _syncer(tmp_path: Path, members: list[Member], reloads: Reloads, **edge: object) -> Syncer:
    config = validate({"load_balancing": {"weights": {"g5.xlarge": 2}},
                       "fleet": {"instance_types": [{"type": "g5.xlarge"}]}}, "test")
    return Syncer(config=config, conf_path=tmp_path / "nginx.conf", reload=reloads,
                  list_members=lambda: list(members), listen="127.0.0.1:18080",
                  paths=NginxPaths.under(tmp_path / "run"), **edge)


# What the AWS edge passes, on loopback here: `nginx -t` binds every listen address, and
# 127.0.0.2 (loopback too) stands in for the edge's private address.
GATEWAY = GatewayHook("127.0.0.1:18090", lease_port=18091)
STATUS = "127.0.0.1:18081"
METRICS = MetricsProxy("127.0.0.2", (19180, 18090))


def test_with_the_gateway_every_rendering_asks_it_and_nginx_accepts_it(tmp_path):
    members = [_member("i-1", "InService", ip="10.0.0.1")]
    reloads = Reloads()
    syncer = _syncer(tmp_path, members, reloads, gateway=GATEWAY, status_listen=STATUS,
                     metrics=METRICS)

    assert syncer.sync_once().outcome is Outcome.RELOADED
    text = syncer.conf_path.read_text()
    assert "auth_request /_llmfleet_auth;" in text
    assert "server 127.0.0.1:18090;" in text
    assert ("access_log syslog:server=127.0.0.1:18091,nohostname,tag=llmfleet_lease "
            "llmfleet_lease if=$llmfleet_lease;") in text
    assert "listen 127.0.0.1:18081;" in text and "stub_status;" in text
    assert "listen 127.0.0.2:18090;" in text and "listen 127.0.0.2:19180;" in text

    # Still only on change, and a refused config still keeps the last good one.
    assert syncer.sync_once().outcome is Outcome.UNCHANGED and reloads.count == 1
    members.append(_member("i-2", "InService", ip="10.0.0.2 bogus"))
    assert syncer.sync_once().outcome is Outcome.REJECTED
    assert syncer.conf_path.read_text() == text and reloads.count == 1


def test_sync_checks_with_nginx_and_reloads_only_when_the_text_changes(tmp_path):
    members = [_member("i-1", "InService", ip="10.0.0.1")]
    reloads = Reloads()
    syncer = _syncer(tmp_path, members, reloads)

    first = syncer.sync_once()
    assert first.outcome is Outcome.RELOADED and reloads.count == 1
    text = syncer.conf_path.read_text()
    assert "server 10.0.0.1:8000 weight=2" in text

    assert syncer.sync_once().outcome is Outcome.UNCHANGED and reloads.count == 1

    members.append(_member("i-2", "Terminating:Wait", ip="10.0.0.2"))
    assert syncer.sync_once().outcome is Outcome.RELOADED and reloads.count == 2
    assert "server 10.0.0.2:8000 weight=2 max_fails=3 fail_timeout=30s down;" in (
        syncer.conf_path.read_text())
    assert not list(tmp_path.glob("*.candidate"))


def test_a_config_nginx_refuses_never_replaces_the_last_good_one(tmp_path):
    members = [_member("i-1", "InService", ip="10.0.0.1")]
    reloads = Reloads()
    syncer = _syncer(tmp_path, members, reloads)
    syncer.sync_once()
    good = syncer.conf_path.read_text()

    # An address nginx cannot parse (what a corrupt API answer would render).
    members.append(_member("i-2", "InService", ip="10.0.0.2 bogus"))
    rejected = syncer.sync_once()

    assert rejected.outcome is Outcome.REJECTED
    assert "bogus" in rejected.detail
    assert syncer.conf_path.read_text() == good
    assert reloads.count == 1
    assert not list(tmp_path.glob("*.candidate"))


def test_a_failed_reload_is_reported(tmp_path):
    syncer = _syncer(tmp_path, [_member("i-1", "InService")], Reloads(returncode=1))
    assert syncer.sync_once().outcome is Outcome.RELOAD_FAILED


def test_cli_once_syncs_the_groups_into_the_nginx_config(aws, tmp_path):
    config_file = tmp_path / "fleet.json"
    config_file.write_text(FleetConfig().model_dump_json())
    conf = tmp_path / "nginx.conf"
    marker = tmp_path / "reloaded"
    argv = ["--once", "--config", str(config_file), "--groups", "spot", "ondemand",
            "--region", REGION, "--conf", str(conf), "--listen", "127.0.0.1:18080",
            "--runtime-dir", str(tmp_path / "run"), "--reload-command", f"touch {marker}"]

    assert main(argv) == 0
    assert marker.exists()
    assert conf.read_text().count("server 10.0.1.") == 3

    marker.unlink()
    assert main(argv) == 0
    assert not marker.exists(), "an unchanged fleet must not reload nginx"


def test_cli_turns_on_the_gateway_stub_status_and_the_monitors_metrics(aws, tmp_path):
    config_file = tmp_path / "fleet.json"
    config_file.write_text(FleetConfig().model_dump_json())
    conf = tmp_path / "nginx.conf"
    marker = tmp_path / "reloaded"
    argv = ["--once", "--config", str(config_file), "--groups", "spot", "ondemand",
            "--region", REGION, "--conf", str(conf), "--listen", "127.0.0.1:18080",
            "--runtime-dir", str(tmp_path / "run"), "--reload-command", f"touch {marker}",
            "--gateway", "127.0.0.1:18090", "--lease-port", "18091",
            "--status-listen", STATUS, "--metrics-address", "127.0.0.2",
            "--metrics-ports", "19180", "18090"]

    assert main(argv) == 0 and marker.exists()
    text = conf.read_text()
    assert text.count("server 10.0.1.") == 3
    assert "auth_request /_llmfleet_auth;" in text
    assert "syslog:server=127.0.0.1:18091" in text
    assert "listen 127.0.0.1:18081;" in text
    assert "listen 127.0.0.2:19180;" in text and "listen 127.0.0.2:18090;" in text

    marker.unlink()
    assert main(argv) == 0
    assert not marker.exists(), "an unchanged fleet must not reload nginx"


@pytest.mark.parametrize("flags", [["--lease-port", "18091"],
                                   ["--metrics-address", "127.0.0.2"],
                                   ["--metrics-ports", "9180"]])
def test_cli_refuses_flags_that_make_no_sense_alone(tmp_path, capsys, flags):
    config_file = tmp_path / "fleet.json"
    config_file.write_text(FleetConfig().model_dump_json())
    with pytest.raises(SystemExit) as exit_:
        main(["--once", "--config", str(config_file), "--groups", "spot", *flags])
    assert exit_.value.code == 2
    assert flags[0] in capsys.readouterr().err


def test_cli_refuses_a_bad_config_file(tmp_path, capsys):
    config_file = tmp_path / "fleet.json"
    config_file.write_text(json.dumps({"fleet": {"max_size": 0}}))
    assert main(["--once", "--config", str(config_file), "--groups", "spot"]) == 2
    assert "fleet.max_size" in capsys.readouterr().err
