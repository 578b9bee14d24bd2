"""What the edge's user data runs: each service record of `llmfleet.services` as the systemd
unit cloud-init writes, Redis with a password made on the instance and persistence on, and a
real Redis with the edge's settings. (Both placements of the records, and the programs'
own parsers on their command lines: tests/unit/test_services.py.)"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from infra_helpers import import_infra, stack_config_env
from redis.backoff import NoBackoff
from redis.retry import Retry

from llmfleet.config import from_pulumi_config_env, load_config
from llmfleet.edge import sync
from llmfleet.edge.nginx import LISTEN_BACKLOG
from llmfleet.gateway.__main__ import parse_args as gateway_args
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.observability.prometheus import aws_prometheus_config
from llmfleet.services import GroupMembers, Placement, Service, edge_services

REDIS_CONF = "/etc/redis/llmfleet.conf"
REDIS_AUTH = "/usr/local/sbin/llmfleet-redis-auth"
PRIVATE_IP = "10.0.1.23"


def render_edge(stack: str, **sections: Any) -> str:
    config = from_pulumi_config_env(stack_config_env(stack, **sections), stack)
    return import_infra("cloud_init").render_edge(
        config, stack=stack, region="us-east-1", eip_allocation_id="eipalloc-0a1b2c3d",
        bundle_bucket="bundle", bundle_key="llmfleet.zip", spot_group="spot",
        on_demand_group="ondemand", redis_volume_id="vol-0123456789abcdef0",
        boot_requirement="boto3==1.0.0")


def edge_user_data(stack: str, **sections: Any) -> dict[str, Any]:
    return yaml.safe_load(render_edge(stack, **sections))


def files(data: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in data["write_files"]}


def edge_host(stack: str = "startup-prod") -> tuple[Any, Placement, list[Service]]:
    config = from_pulumi_config_env(stack_config_env(stack), stack)
    place = Placement.for_edge_host(config, GroupMembers("us-east-1", ("spot", "ondemand"), stack))
    return config, place, edge_services(config, place)


def unit(text: str) -> dict[str, list[str]]:
    """A unit file's settings: every value of each key, in order (ExecStart= may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_every_record_becomes_the_unit_cloud_init_writes_with_its_exact_command_line():
    _, place, services = edge_host()
    written = files(edge_user_data("startup-prod"))
    systemd = import_infra("systemd_units")
    for service in services:
        name = systemd.unit_name(service)
        path = (f"/etc/systemd/system/{name}.d/llmfleet.conf" if service.packaged_unit
                else f"/etc/systemd/system/{name}")
        if (service.packaged_unit and not service.replaces_command and not service.after
                and not service.data_dir):
            assert path not in written, f"{name} runs as packaged"
            continue
        settings = unit(written[path])
        if service.data_dir:  # Redis: never on an empty directory instead of its volume
            assert settings["RequiresMountsFor"] == [service.data_dir], name
        if not service.packaged_unit or service.replaces_command:
            # systemd splits ExecStart as a shell would (its own quoting): the same argv.
            exec_start = settings["ExecStart"][-1].replace("${LLMFLEET_PRIVATE_IP}", PRIVATE_IP)
            assert shlex.split(exec_start) == [
                w.replace("${LLMFLEET_PRIVATE_IP}", PRIVATE_IP) for w in service.argv], name
        for needed in service.after:
            [other] = [s for s in services if s.name == needed]
            assert systemd.unit_name(other) in settings["After"][0].split(), (name, needed)
        for secret in service.secrets:
            assert f"{secret}:{place.secret_source(secret)}" in settings["LoadCredential"]


def test_the_gateway_runs_unprivileged_and_reads_its_password_as_a_credential(tmp_path):
    data = edge_user_data("example", load_balancing={"read_timeout_s": 120})
    gateway = unit(files(data)["/etc/systemd/system/llmfleet-gateway.service"])
    assert gateway["User"] == ["llmfleet"] and gateway["Restart"] == ["always"]
    assert gateway["LoadCredential"] == ["redis-password:/etc/llmfleet/redis-password"]
    args = gateway_args(shlex.split(gateway["ExecStart"][0])[3:])
    assert args.redis_password_file == Path("%d/redis-password")
    assert args.lease_ttl == 120 + 60
    # "Started" means /health answers, so everything ordered after it finds it up.
    [health] = gateway["ExecStartPost"]
    assert health.startswith("/usr/bin/curl ") and health.endswith("/health")
    assert ["useradd", "--system", "--user-group", "--no-create-home", "--shell",
            "/usr/sbin/nologin", "llmfleet"] in data["runcmd"]
    # The config the gateway reads is the one the edge carries, and the gateway's loader takes it.
    carried = tmp_path / "fleet.json"
    carried.write_text(files(data)[str(args.config)])
    assert load_config(carried).config.load_balancing.read_timeout_s == 120


def test_services_start_in_record_order_after_the_password_is_made():
    data = edge_user_data("university-prod")
    _, _, services = edge_host("university-prod")
    systemd = import_infra("systemd_units")
    started = [c[-1] for c in data["runcmd"]
               if c[:1] == ["systemctl"] and len(c) > 2 and c[1] != "stop"]
    assert started == [systemd.unit_name(s) for s in services]
    auth = data["runcmd"].index([REDIS_AUTH])
    assert all(data["runcmd"].index(c) > auth for c in data["runcmd"]
               if c[:1] == ["systemctl"] and c[1] not in ("daemon-reload", "stop"))
    # The package's Redis, started on install, stops before its volume is mounted over its
    # directory, and starts again with the others.
    stop = data["runcmd"].index(["systemctl", "stop", "redis-server"])
    [volume] = [c for c in data["runcmd"] if "llmfleet.edge.boot redis-volume" in str(c)]
    assert stop < data["runcmd"].index(volume) < auth


def test_the_sync_agent_serves_the_monitor_the_ports_its_prometheus_scrapes():
    config, place, services = edge_host()
    [sync_service] = [s for s in services if s.name == "sync"]
    args = sync._parser().parse_args(
        [w.replace("${LLMFLEET_PRIVATE_IP}", PRIVATE_IP) for w in sync_service.argv[3:]])
    assert args.metrics_address == PRIVATE_IP
    scrape = yaml.safe_load(aws_prometheus_config(config, region="us-east-1",
                                                  stack="startup-prod"))
    edge_ports = {sd["port"] for job in scrape["scrape_configs"]
                  for sd in job.get("ec2_sd_configs", [])
                  if ["edge"] in (f["values"] for f in sd["filters"])}
    assert set(args.metrics_ports) == edge_ports == set(place.ports.scraped().values())
    assert sync_service.environment_file == place.environment_file
    # The boot script writes the private address the unit reads (tests/infra/test_edge_boot.py
    # runs it).
    data = edge_user_data("startup-prod")
    [fetch] = [c for c in data["runcmd"] if c[:3] == [
        "/opt/llmfleet/venv/bin/python", "/usr/local/lib/llmfleet/edge_boot.py", "fetch"]]
    assert fetch[-1] == place.environment_file


def test_redis_is_loopback_only_persistent_and_its_password_is_made_on_the_instance():
    data = edge_user_data("university-prod")
    settings = [line for line in files(data)[REDIS_CONF].splitlines()
                if line and not line.startswith("#")]
    assert settings == ["bind 127.0.0.1", "protected-mode yes", "port 6379", "appendonly yes",
                        "appendfsync everysec", "include /etc/redis/llmfleet-auth.conf"]

    script = files(data)[REDIS_AUTH]
    assert "umask 077" in script
    assert "head -c 32 /dev/urandom" in script
    assert "if [[ ! -s $password_file ]]" in script, "a password made before is kept"
    assert "printf 'requirepass %s\\n' \"$password\" > /etc/redis/llmfleet-auth.conf" in script
    assert "include /etc/redis/llmfleet.conf' >> /etc/redis/redis.conf" in script


def test_no_password_is_ever_written_into_the_user_data():
    text = render_edge("startup-prod")
    written = set(files(yaml.safe_load(text)))
    assert not {"/etc/llmfleet/redis-password", "/etc/redis/llmfleet-auth.conf",
                "/etc/llmfleet/redis-exporter.json"} & written
    assert re.findall(r"requirepass \S+", text) == ["requirepass %s\\n'"]
    assert "--redis.password=" not in text and "REDIS_PASSWORD" not in text
    assert not re.search(r"[0-9a-f]{32}", text), "nothing that looks like a generated secret"


@pytest.fixture
def redis_with_the_edges_settings(tmp_path: Path) -> Iterator[tuple[list[str], int, str]]:
    """The package's redis.conf with llmfleet's include appended, as the boot script does;
    only what cannot be the edge's here (port, files) is moved into tmp_path."""
    package_conf = Path("/etc/redis/redis.conf")
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
    assert binary, "redis-server is not installed (scripts/bootstrap.sh installs it)"
    if not package_conf.is_file():
        pytest.fail("no packaged /etc/redis/redis.conf to start from: run ./scripts/bootstrap.sh "
                    "(or 'sudo apt-get install -y redis-server'; if it was installed before and "
                    "the file removed, 'sudo apt-get install --reinstall -o "
                    "Dpkg::Options::=--force-confmiss redis-server')")
    password = "test-only-password"
    auth = tmp_path / "llmfleet-auth.conf"
    auth.write_text(f"requirepass {password}\n")
    ours = tmp_path / "llmfleet.conf"
    ours.write_text(files(edge_user_data("example"))[REDIS_CONF].replace(
        "/etc/redis/llmfleet-auth.conf", str(auth)))
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(package_conf.read_text() + f"include {ours}\n" + "\n".join([
        f"port {port}", f"dir {tmp_path}", f"pidfile {tmp_path}/redis.pid", 'logfile ""',
        "daemonize no", "supervised no", ""]))
    yield [binary, str(conf)], port, password


def _start(command: list[str], client: redis.Redis) -> subprocess.Popen:
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    if not wait_until(answers, 10):
        server.kill()
        server.wait(10)
        pytest.fail("redis-server did not start, or did not take the password")
    return server


def test_a_real_redis_with_the_edges_settings_needs_the_password_and_keeps_keys(
        redis_with_the_edges_settings):
    command, port, password = redis_with_the_edges_settings
    client = redis.Redis("127.0.0.1", port, password=password, decode_responses=True)
    server = _start(command, client)
    try:
        # No retries: redis-py would back off and retry a refused login for seconds.
        stranger = redis.Redis("127.0.0.1", port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.exceptions.AuthenticationError):
            stranger.get("anything")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        client.hset("llmfleet:key:abc", mapping={"client": "acme", "tier": "paid"})
        # A crash, not a clean shutdown: no RDB snapshot is written, only the AOF has the key.
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = _start(command, client)
        assert client.hgetall("llmfleet:key:abc") == {"client": "acme", "tier": "paid"}
    finally:
        server.kill()
        server.wait(10)


def test_the_edge_and_the_nodes_have_kernel_room_for_a_burst():
    sysctls = files(edge_user_data("startup-prod"))["/etc/sysctl.d/60-llmfleet-edge.conf"]
    settings = dict(line.split(" = ") for line in sysctls.splitlines()
                    if line and not line.startswith("#"))
    # Linux caps nginx's listen backlog at somaxconn: it must be at least as deep.
    assert int(settings["net.core.somaxconn"]) >= LISTEN_BACKLOG
    assert settings["net.ipv4.tcp_tw_reuse"] == "1"
    data = edge_user_data("startup-prod")
    assert data["runcmd"].index(["sysctl", "--system"]) < min(
        i for i, c in enumerate(data["runcmd"]) if c[:2] == ["systemctl", "enable"])

    config = from_pulumi_config_env(stack_config_env("startup-prod"), "startup-prod")
    node = yaml.safe_load(import_infra("cloud_init").render_gpu_node(
        config, stack="startup-prod", region="us-east-1",
        images={"vllm": "v", "dcgm_exporter": "d", "node_exporter": "n"}, registry=None))
    vllm = files(node)["/usr/local/sbin/llmfleet-vllm"]
    assert f"--sysctl net.core.somaxconn={LISTEN_BACKLOG}" in vllm
    assert "--ulimit nofile=65536:65536" in vllm
