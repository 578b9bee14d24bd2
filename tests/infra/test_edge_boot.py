"""The edge's first boot, run against moto: the user data's own script unpacks the bundle and
notes the private address; then `llmfleet.edge.boot` attaches the stack's Redis volume (waiting
for the edge before to let go of it) and prepares it once, and takes the Elastic IP only once
nginx's /health answers, marking the instance unhealthy when it never does."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import yaml
from infra_helpers import import_infra, stack_config_env
from moto import mock_aws

from llmfleet.config import from_pulumi_config_env
from llmfleet.edge import boot

REGION = "us-east-1"
PRIVATE_IP = "10.0.1.23"


def user_data() -> dict[str, Any]:
    config = from_pulumi_config_env(stack_config_env("startup-prod"), "startup-prod")
    return yaml.safe_load(import_infra("cloud_init").render_edge(
        config, stack="startup-prod", region=REGION, eip_allocation_id="eipalloc-0a1b2c3d",
        bundle_bucket="bundle", bundle_key="llmfleet.zip", spot_group="spot",
        on_demand_group="ondemand", redis_volume_id="vol-0123456789abcdef0",
        boot_requirement="boto3==1.0.0"))


@pytest.fixture
def edge_boot(tmp_path: Path) -> ModuleType:
    """The script exactly as cloud-init writes it, imported as a module."""
    [script] = [f["content"] for f in user_data()["write_files"]
                if f["path"] == "/usr/local/lib/llmfleet/edge_boot.py"]
    path = tmp_path / "edge_boot.py"
    path.write_text(script)
    spec = importlib.util.spec_from_file_location("edge_boot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Edge:
    """moto's account with the edge's group of one and its Elastic IP."""

    def __init__(self) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.autoscaling = boto3.client("autoscaling", region_name=REGION)
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24",
                                        AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
        self.ec2.create_launch_template(LaunchTemplateName="edge", LaunchTemplateData={
            "ImageId": "ami-12c6146b", "InstanceType": "t3.small"})
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="edge", MinSize=1, MaxSize=1, DesiredCapacity=1,
            LaunchTemplate={"LaunchTemplateName": "edge", "Version": "$Latest"},
            VPCZoneIdentifier=subnet)
        self.instance_id = self._instance()["InstanceId"]
        self.allocation_id = self.ec2.allocate_address(Domain="vpc")["AllocationId"]

    def _instance(self) -> dict[str, Any]:
        [group] = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=["edge"])["AutoScalingGroups"]
        return group["Instances"][0]

    def health(self) -> str:
        return self._instance()["HealthStatus"]

    def address_holder(self) -> str | None:
        [address] = self.ec2.describe_addresses(AllocationIds=[self.allocation_id])["Addresses"]
        return address.get("InstanceId") or None  # moto answers "" for no instance


@pytest.fixture
def edge(edge_boot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[Edge]:
    with mock_aws():
        account = Edge()
        metadata = {"instance-id": account.instance_id, "local-ipv4": PRIVATE_IP}
        monkeypatch.setattr(edge_boot, "metadata", metadata.__getitem__)
        monkeypatch.setattr(boot, "metadata", metadata.__getitem__)
        yield account


def nginx(status: int) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server answering every GET with `status`: 200 as our nginx config's /health,
    404 as the distribution's default site before the sync agent's first pass."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/health"


def test_the_address_is_taken_once_nginx_answers(edge):
    server, url = nginx(200)
    try:
        boot.publish(REGION, edge.allocation_id, url, "5")
    finally:
        server.shutdown()

    assert edge.address_holder() == edge.instance_id
    assert edge.health() == "Healthy"


def test_an_edge_whose_nginx_never_answers_is_marked_unhealthy_and_gets_no_address(edge):
    server, url = nginx(404)
    try:
        with pytest.raises(RuntimeError, match="did not answer within 1 s"):
            boot.publish(REGION, edge.allocation_id, url, "1")
    finally:
        server.shutdown()

    assert edge.address_holder() is None
    assert edge.health() == "Unhealthy"


def test_fetch_unpacks_the_bundle_and_notes_the_private_address(edge_boot, edge, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="bundle")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as bundle:
        bundle.writestr("pyproject.toml", "[project]\n")
    s3.put_object(Bucket="bundle", Key="llmfleet.zip", Body=zipped.getvalue())
    target, env_file = tmp_path / "src", tmp_path / "edge.env"

    edge_boot.fetch(REGION, "bundle", "llmfleet.zip", str(target), str(env_file))

    assert (target / "pyproject.toml").read_text() == "[project]\n"
    assert env_file.read_text() == f"LLMFLEET_PRIVATE_IP={PRIVATE_IP}\n"


@pytest.mark.parametrize("step", ["redis-volume", "publish"])
def test_without_a_python_to_run_a_step_the_instance_powers_off(tmp_path, step):
    # The step's runcmd line, as cloud-init hands it to sh; a stand-in systemctl records it.
    [publish] = [c for c in user_data()["runcmd"]
                 if isinstance(c, str) and f"llmfleet.edge.boot {step} " in c]
    assert publish.startswith("/opt/llmfleet/venv/bin/python ")
    assert not Path("/opt/llmfleet/venv/bin/python").exists()
    called = tmp_path / "systemctl-called"
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {called}\n')
    fake.chmod(0o755)

    subprocess.run(["sh", "-c", publish], env={"PATH": f"{fake.parent}:/usr/bin:/bin"},
                   capture_output=True, timeout=30, check=False)

    assert called.read_text() == "poweroff\n"


# -- the Redis volume: the keys outlive the instance -----------------------------------------

VOLUME_ZONE = f"{REGION}a"


def test_a_free_redis_volume_is_attached_to_this_edge(edge):
    volume = edge.ec2.create_volume(AvailabilityZone=VOLUME_ZONE, Size=1)["VolumeId"]

    boot.attach(edge.ec2, volume, edge.instance_id, time.monotonic() + 30)

    [found] = edge.ec2.describe_volumes(VolumeIds=[volume])["Volumes"]
    assert [a["InstanceId"] for a in found["Attachments"]] == [edge.instance_id]
    # Again, as after a reboot: already ours, nothing to do.
    boot.attach(edge.ec2, volume, edge.instance_id, time.monotonic() + 30)


def held_by_another_instance(edge) -> tuple[str, str]:
    """A Redis volume attached to another instance (the edge before): its id and that
    instance's."""
    volume = edge.ec2.create_volume(AvailabilityZone=VOLUME_ZONE, Size=1)["VolumeId"]
    image = edge.ec2.describe_images()["Images"][0]["ImageId"]
    other = edge.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                   Placement={"AvailabilityZone": VOLUME_ZONE})["Instances"][0]
    edge.ec2.attach_volume(VolumeId=volume, InstanceId=other["InstanceId"], Device="/dev/sdf")
    return volume, other["InstanceId"]


def test_the_new_edge_waits_for_the_one_before_to_let_go_of_the_volume(edge):
    volume, before = held_by_another_instance(edge)
    attaching = threading.Thread(target=boot.attach, args=(
        edge.ec2, volume, edge.instance_id, time.monotonic() + 60))
    attaching.start()
    edge.ec2.detach_volume(VolumeId=volume, InstanceId=before)  # it terminates
    attaching.join(timeout=60)

    assert not attaching.is_alive()
    [found] = edge.ec2.describe_volumes(VolumeIds=[volume])["Volumes"]
    assert [a["InstanceId"] for a in found["Attachments"]] == [edge.instance_id]


def test_a_volume_still_held_at_the_deadline_stops_the_boot(edge):
    volume, _ = held_by_another_instance(edge)

    with pytest.raises(RuntimeError, match="is still held by"):
        boot.attach(edge.ec2, volume, edge.instance_id, time.monotonic())


def test_the_first_edge_makes_the_file_system_and_the_next_keeps_its_data(tmp_path):
    # A file stands in for the block device: blkid and mkfs.ext4 are the real ones.
    device = tmp_path / "volume.img"
    device.write_bytes(b"\0" * (8 << 20))
    fstab, mount_point = tmp_path / "fstab", tmp_path / "redis"
    fstab.write_text("LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
    done: list[list[str]] = []

    def run(argv, **kwargs):
        done.append(list(argv))
        if argv[0] in ("blkid", "mkfs.ext4"):
            return subprocess.run(argv, **kwargs)
        return subprocess.CompletedProcess(argv, 0)  # mount, chown: root's, on a real edge

    boot.prepare(str(device), str(mount_point), str(fstab), run=run)
    boot.prepare(str(device), str(mount_point), str(fstab), run=run)  # the next edge

    assert [argv[0] for argv in done].count("mkfs.ext4") == 1
    [entry] = [line for line in fstab.read_text().splitlines() if str(mount_point) in line]
    assert entry.startswith("UUID=") and entry.endswith(f"{mount_point} ext4 defaults,nofail 0 2")
    assert ["mount", str(mount_point)] in done
    assert ["chown", "redis:redis", str(mount_point)] in done


# -- TLS files from SSM (edge.tls mode certificate) ------------------------------------------

def test_the_certificate_and_key_come_from_ssm_into_owner_only_files(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        ssm = boto3.client("ssm", region_name=REGION)
        ssm.put_parameter(Name="/acme/tls/chain", Type="SecureString",
                          Value="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")
        ssm.put_parameter(Name="/acme/tls/key", Type="SecureString",
                          Value="-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
        chain, key = tmp_path / "tls" / "chain.pem", tmp_path / "tls" / "key.pem"

        boot.write_tls_files(ssm, {"/acme/tls/chain": str(chain), "/acme/tls/key": str(key)})

        assert chain.read_text().endswith("-----END CERTIFICATE-----\n")
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        assert oct(chain.parent.stat().st_mode & 0o777) == "0o700"

        ssm.put_parameter(Name="/acme/tls/key", Type="SecureString", Value="not a key",
                          Overwrite=True)
        with pytest.raises(RuntimeError, match="/acme/tls/key holds no PEM block"):
            boot.write_tls_files(ssm, {"/acme/tls/key": str(key)})
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # the old one stays
