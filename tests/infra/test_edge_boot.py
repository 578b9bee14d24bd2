"""The edge's boot script (`edge_boot.py` in its user data), run against moto: the bundle and
the private address first; the Elastic IP only once nginx's /health answers, and an instance
marked unhealthy when it never does."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import threading
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

REGION = "us-east-1"
PRIVATE_IP = "10.0.1.23"


def user_data() -> dict[str, Any]:
    config = from_pulumi_config_env(stack_config_env("startup-prod"), "startup-prod")
    return yaml.safe_load(import_infra("cloud_init").render_edge(
        config, stack="startup-prod", region=REGION, eip_allocation_id="eipalloc-0a1b2c3d",
        bundle_bucket="bundle", bundle_key="llmfleet.zip", spot_group="spot",
        on_demand_group="ondemand"))


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


def test_the_address_is_taken_once_nginx_answers(edge_boot, edge):
    server, url = nginx(200)
    try:
        edge_boot.publish(REGION, edge.allocation_id, url, "5")
    finally:
        server.shutdown()

    assert edge.address_holder() == edge.instance_id
    assert edge.health() == "Healthy"


def test_an_edge_whose_nginx_never_answers_is_marked_unhealthy_and_gets_no_address(
        edge_boot, edge):
    server, url = nginx(404)
    try:
        with pytest.raises(RuntimeError, match="did not answer within 1 s"):
            edge_boot.publish(REGION, edge.allocation_id, url, "1")
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


def test_without_a_python_to_run_the_script_the_instance_powers_off(tmp_path):
    # The last runcmd line, as cloud-init hands it to sh; a stand-in systemctl records its call.
    publish = user_data()["runcmd"][-1]
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
