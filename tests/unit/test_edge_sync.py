"""The edge's upstream sync agent: fleet membership from AWS (moto) or the sandbox's file,
active health checks, checked with the real `nginx -t`, reloaded only on change, and never
replacing a good config with a bad one."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from llmfleet.config import FleetConfig, validate
from llmfleet.edge import sync
from llmfleet.edge.members import (
    DRAINING_TAG,
    Member,
    group_members,
    read_members_file,
    write_members_file,
)
from llmfleet.edge.nginx import GatewayHook, MetricsProxy, NginxPaths
from llmfleet.edge.sync import (
    MemberState,
    Outcome,
    Syncer,
    main,
    read_state,
)
from llmfleet.local.sandbox.ports import free_port

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


def test_group_members_are_in_service_instances_with_private_ips_types_and_drain_tags(aws):
    autoscaling, ec2 = aws
    spot = _instances(autoscaling, "spot")
    ec2.create_tags(Resources=[spot[0]], Tags=[{"Key": DRAINING_TAG, "Value": "true"}])
    autoscaling.enter_standby(InstanceIds=[spot[1]], AutoScalingGroupName="spot",
                              ShouldDecrementDesiredCapacity=True)

    members = {m.name: m for m in group_members(autoscaling, ec2, ["spot", "ondemand"], 8000)}

    # Standby is no member of the edge; the tagged one drains.
    assert set(members) == {spot[0], *_instances(autoscaling, "ondemand")}
    assert members[spot[0]].draining
    assert not any(m.draining for name, m in members.items() if name != spot[0])
    assert {m.instance_type for m in members.values()} == {"g5.xlarge", "g6.xlarge"}
    assert all(m.host.startswith("10.0.1.") and m.port == 8000 for m in members.values())


def test_an_empty_fleet_lists_no_members(aws):
    autoscaling, ec2 = aws
    for group in ("spot", "ondemand"):
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)
    assert group_members(autoscaling, ec2, ["spot", "ondemand"], 8000) == []


def test_the_sandboxs_members_file_round_trips_and_a_missing_file_is_an_empty_fleet(tmp_path):
    members = [Member("backend-1", "127.0.0.1", 8001),
               Member("backend-2", "127.0.0.1", 8002, draining=True)]
    path = tmp_path / "backends.json"
    assert read_members_file(path) == []
    write_members_file(path, members)
    assert read_members_file(path) == members


def _member(name: str, ip: str = "10.0.0.1", draining: bool = False) -> Member:
    return Member(name, ip, 8000, "g5.xlarge", draining)


class Health:
    """Stands in for the /health probes: which members answer right now."""

    def __init__(self, *answering: str) -> None:
        self.answering = set(answering)
        self.probed: list[str] = []

    def __call__(self, member: Member) -> bool:
        self.probed.append(member.name)
        return member.name in self.answering


class Reloads:
    """Stands in for `systemctl reload nginx`, which must not touch a system nginx here."""

    def __init__(self, returncode: int = 0) -> None:
        self.count = 0
        self.returncode = returncode

    def __call__(self) -> subprocess.CompletedProcess:
        self.count += 1
        return subprocess.CompletedProcess(["reload"], self.returncode, "", "")


def _syncer(tmp_path: Path, members: list[Member], reloads: Reloads, health: Health | None = None,
            *, nginx_runs: bool = True, **edge: object) -> Syncer:
    config = validate({"load_balancing": {"weights": {"g5.xlarge": 2}},
                       "fleet": {"instance_types": [{"type": "g5.xlarge"}]}}, "test")
    paths = NginxPaths.under(tmp_path / "run")
    if nginx_runs:  # a live pid in nginx's pid file: this test process stands in for it
        Path(paths.pid).parent.mkdir(parents=True, exist_ok=True)
        Path(paths.pid).write_text(str(os.getpid()))
    return Syncer(config=config, conf_path=tmp_path / "nginx.conf", reload=reloads,
                  list_members=lambda: list(members),
                  probe=health or Health(*(m.name for m in members)),
                  listen="127.0.0.1:18080", paths=paths, state_file=tmp_path / "members.json",
                  **edge)


def _servers(syncer: Syncer) -> list[str]:
    return [line.strip() for line in syncer.conf_path.read_text().splitlines()
            if line.strip().startswith("server 10.")]


@pytest.mark.parametrize(("answered_before", "answers_now", "draining", "state"), [
    (False, False, False, MemberState.BOOTING),  # still loading its model: no traffic
    (False, True, False, MemberState.READY),
    (True, True, False, MemberState.READY),
    (True, False, False, MemberState.DOWN),  # failing now: down until it answers again
    (True, True, True, MemberState.DRAINING),
    (False, False, True, MemberState.BOOTING),  # never served: nothing to drain
])
def test_member_state_from_its_health_history_and_drain_flag(
        tmp_path, answered_before, answers_now, draining, state):
    health = Health("i-1") if answered_before else Health()
    members = [_member("i-1")]
    syncer = _syncer(tmp_path, members, Reloads(), health)
    syncer.sync_once()
    health.answering = {"i-1"} if answers_now else set()
    members[0] = _member("i-1", draining=draining)

    [view] = syncer.sync_once().members
    assert view.state is state
    assert read_state(tmp_path / "members.json") == {"i-1": state}


def test_booting_members_stay_out_failing_and_draining_ones_are_down(tmp_path):
    members = [_member("i-c", "10.0.0.3"), _member("i-a", "10.0.0.1"),
               _member("i-b", "10.0.0.2"), _member("i-d", "10.0.0.4")]
    health = Health("i-a", "i-b", "i-c")
    syncer = _syncer(tmp_path, members, Reloads(), health)
    syncer.sync_once()
    health.answering = {"i-c"}  # i-a fails now; i-d has never answered
    members[2] = _member("i-b", "10.0.0.2", draining=True)

    syncer.sync_once()
    assert _servers(syncer) == [
        "server 10.0.0.1:8000 weight=2 max_fails=3 fail_timeout=30s down;  # i-a",
        "server 10.0.0.2:8000 weight=2 max_fails=3 fail_timeout=30s down;  # i-b",
        "server 10.0.0.3:8000 weight=2 max_fails=3 fail_timeout=30s;  # i-c",
    ]
    assert "i-b" not in health.probed[4:], "a draining member is not probed"


def test_a_member_that_fails_then_answers_again_rejoins(tmp_path):
    health = Health("i-1")
    syncer = _syncer(tmp_path, [_member("i-1")], Reloads(), health)
    syncer.sync_once()
    health.answering = set()
    assert [v.state for v in syncer.sync_once().members] == [MemberState.DOWN]
    health.answering = {"i-1"}
    assert [v.state for v in syncer.sync_once().members] == [MemberState.READY]
    assert _servers(syncer) == ["server 10.0.0.1:8000 weight=2 max_fails=3 fail_timeout=30s;"
                                "  # i-1"]


def test_a_member_that_left_must_answer_again_before_it_gets_traffic(tmp_path):
    members = [_member("i-1")]
    health = Health("i-1")
    syncer = _syncer(tmp_path, members, Reloads(), health)
    syncer.sync_once()
    members.clear()
    syncer.sync_once()
    members.append(_member("i-1"))
    health.answering = set()
    assert [v.state for v in syncer.sync_once().members] == [MemberState.BOOTING]


# What the AWS edge passes, on loopback here: `nginx -t` binds every listen address, and
# 127.0.0.2 (loopback too) stands in for the edge's private address.
GATEWAY = GatewayHook("127.0.0.1:18090", lease_port=18091)
STATUS = "127.0.0.1:18081"
METRICS = MetricsProxy("127.0.0.2", (19180, 18090))


def test_with_the_gateway_every_rendering_asks_it_and_nginx_accepts_it(tmp_path):
    members = [_member("i-1", "10.0.0.1")]
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
    members.append(_member("i-2", "10.0.0.2 bogus"))
    syncer.probe = Health("i-1", "i-2")
    assert syncer.sync_once().outcome is Outcome.REJECTED
    assert syncer.conf_path.read_text() == text and reloads.count == 1


def test_sync_checks_with_nginx_and_reloads_only_when_the_text_changes(tmp_path):
    members = [_member("i-1", "10.0.0.1")]
    reloads = Reloads()
    health = Health("i-1")
    syncer = _syncer(tmp_path, members, reloads, health)

    first = syncer.sync_once()
    assert first.outcome is Outcome.RELOADED and reloads.count == 1
    assert "server 10.0.0.1:8000 weight=2" in syncer.conf_path.read_text()

    assert syncer.sync_once().outcome is Outcome.UNCHANGED and reloads.count == 1

    members.append(_member("i-2", "10.0.0.2"))
    health.answering.add("i-2")
    assert syncer.sync_once().outcome is Outcome.RELOADED and reloads.count == 2
    assert "server 10.0.0.2:8000 weight=2 max_fails=3 fail_timeout=30s;" in (
        syncer.conf_path.read_text())
    assert not list(tmp_path.glob("*.candidate"))


def test_when_nginx_is_not_running_the_config_waits_for_it_without_a_reload(tmp_path):
    reloads = Reloads()
    syncer = _syncer(tmp_path, [_member("i-1")], reloads, nginx_runs=False)
    # `nginx -t` leaves an empty pid file behind; that is no running nginx either.
    Path(syncer.paths.pid).parent.mkdir(parents=True, exist_ok=True)
    Path(syncer.paths.pid).write_text("")

    result = syncer.sync_once()
    assert result.outcome is Outcome.WRITTEN and result.ok
    assert reloads.count == 0
    assert "server 10.0.0.1:8000" in syncer.conf_path.read_text()


def test_a_config_nginx_refuses_never_replaces_the_last_good_one(tmp_path):
    members = [_member("i-1", "10.0.0.1")]
    reloads = Reloads()
    health = Health("i-1", "i-2")
    syncer = _syncer(tmp_path, members, reloads, health)
    syncer.sync_once()
    good = syncer.conf_path.read_text()

    # An address nginx cannot parse (what a corrupt API answer would render).
    members.append(_member("i-2", "10.0.0.2 bogus"))
    rejected = syncer.sync_once()

    assert rejected.outcome is Outcome.REJECTED
    assert "bogus" in rejected.detail
    assert syncer.conf_path.read_text() == good
    assert reloads.count == 1
    assert not list(tmp_path.glob("*.candidate"))


def test_a_failed_reload_is_reported(tmp_path):
    syncer = _syncer(tmp_path, [_member("i-1")], Reloads(returncode=1))
    assert syncer.sync_once().outcome is Outcome.RELOAD_FAILED


def test_cli_once_syncs_the_groups_into_the_nginx_config(aws, tmp_path, monkeypatch):
    # The instances moto invents have addresses nothing answers on: they answer here.
    monkeypatch.setattr(sync, "probe_health", lambda member: True)
    config_file = tmp_path / "fleet.json"
    config_file.write_text(FleetConfig().model_dump_json())
    conf = tmp_path / "nginx.conf"
    marker = tmp_path / "reloaded"
    argv = ["--once", "--config", str(config_file), "--groups", "spot", "ondemand",
            "--region", REGION, "--conf", str(conf), "--listen", "127.0.0.1:18080",
            "--runtime-dir", str(tmp_path / "run"), "--reload-command", f"touch {marker}"]
    pid = tmp_path / "run" / "nginx.pid"
    pid.parent.mkdir()
    pid.write_text(str(os.getpid()))

    assert main(argv) == 0
    assert marker.exists()
    assert conf.read_text().count("server 10.0.1.") == 3

    marker.unlink()
    assert main(argv) == 0
    assert not marker.exists(), "an unchanged fleet must not reload nginx"


@pytest.fixture
def health_server() -> Iterator[int]:
    """A loopback server whose /health answers 200, standing in for a model server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_cli_with_a_members_file_probes_each_members_health_for_real(tmp_path, health_server):
    silent = free_port()  # nothing listens: a backend still loading its model
    members = tmp_path / "backends.json"
    write_members_file(members, [Member("backend-1", "127.0.0.1", health_server),
                                 Member("backend-2", "127.0.0.1", silent)])
    config_file = tmp_path / "fleet.json"
    config_file.write_text(FleetConfig().model_dump_json())
    conf = tmp_path / "nginx.conf"
    state = tmp_path / "members.json"
    argv = ["--once", "--config", str(config_file), "--members-file", str(members),
            "--conf", str(conf), "--listen", "127.0.0.1:18080",
            "--runtime-dir", str(tmp_path / "run"), "--reload-command", "false",
            "--gateway", "127.0.0.1:18090", "--lease-port", "18091",
            "--status-listen", STATUS, "--metrics-address", "127.0.0.2",
            "--metrics-ports", "19180", "18090", "--state-file", str(state)]

    # nginx does not run: the config is written for it, and nothing is reloaded.
    assert main(argv) == 0
    text = conf.read_text()
    assert f"server 127.0.0.1:{health_server} " in text
    assert f"127.0.0.1:{silent}" not in text
    assert read_state(state) == {"backend-1": MemberState.READY,
                                 "backend-2": MemberState.BOOTING}
    assert "auth_request /_llmfleet_auth;" in text
    assert "syslog:server=127.0.0.1:18091" in text
    assert "listen 127.0.0.1:18081;" in text
    assert "listen 127.0.0.2:19180;" in text and "listen 127.0.0.2:18090;" in text


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
