"""What the edge's user data runs: the gateway and the edge exporter as services, Redis with a
password made on the instance and persistence on, and the sync agent rendering nginx with the
gateway, stub_status and the monitor's /metrics. Command lines are parsed by the programs' own
argument parsers, so a flag the program does not know fails here, not at boot."""

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

from llmfleet.config import from_pulumi_config_env, load_yaml
from llmfleet.edge import sync
from llmfleet.gateway.__main__ import parse_args as gateway_args
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.observability.prometheus import aws_prometheus_config

GATEWAY_UNIT = "/etc/systemd/system/llmfleet-gateway.service"
EXPORTER_UNIT = "/etc/systemd/system/llmfleet-edge-exporter.service"
SYNC_UNIT = "/etc/systemd/system/llmfleet-sync.service"
REDIS_CONF = "/etc/redis/llmfleet.conf"
REDIS_AUTH = "/usr/local/sbin/llmfleet-redis-auth"
NGINX_EXPORTER = "/etc/systemd/system/prometheus-nginx-exporter.service.d/llmfleet.conf"
REDIS_EXPORTER = "/etc/systemd/system/prometheus-redis-exporter.service.d/llmfleet.conf"
PRIVATE_IP = "10.0.1.23"


def render_edge(stack: str, **sections: Any) -> str:
    config = from_pulumi_config_env(stack_config_env(stack, **sections), stack)
    return import_infra("cloud_init").render_edge(
        config, stack=stack, region="us-east-1", eip_allocation_id="eipalloc-0a1b2c3d",
        bundle_bucket="bundle", bundle_key="llmfleet.zip", spot_group="spot",
        on_demand_group="ondemand")


def edge_user_data(stack: str, **sections: Any) -> dict[str, Any]:
    return yaml.safe_load(render_edge(stack, **sections))


def files(data: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in data["write_files"]}


def unit(text: str) -> dict[str, list[str]]:
    """A unit file's settings: every value of each key, in order (ExecStart= may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def argv(unit_text: str, module: str) -> list[str]:
    """The arguments after `python -m <module>` in a unit's ExecStart."""
    [command] = unit(unit_text)["ExecStart"]
    words = shlex.split(command.replace("${LLMFLEET_PRIVATE_IP}", PRIVATE_IP))
    assert words[:3] == ["/opt/llmfleet/venv/bin/python", "-m", module]
    return words[3:]


def runcmd_position(data: dict[str, Any], *words: str) -> int:
    [index] = [i for i, command in enumerate(data["runcmd"])
               if all(word in command for word in words)]
    return index


def test_the_gateway_runs_unprivileged_on_loopback_with_the_stacks_config(tmp_path):
    data = edge_user_data("example", load_balancing={"read_timeout_s": 120})
    gateway = unit(files(data)[GATEWAY_UNIT])
    args = gateway_args(argv(files(data)[GATEWAY_UNIT], "llmfleet.gateway"))

    assert (args.host, args.port) == ("127.0.0.1", 8090)
    assert args.config == Path("/etc/llmfleet/fleet.json")
    assert args.redis_url == "redis://127.0.0.1:6379/0"
    # The root-only password file reaches the gateway as a systemd credential (%d), never
    # through a group or mode that opens the file itself.
    assert gateway["LoadCredential"] == ["redis-password:/etc/llmfleet/redis-password"]
    assert args.redis_password_file == Path("%d/redis-password")
    assert args.lease_port == 8091
    assert args.lease_ttl == 120 + 60
    assert gateway["User"] == ["llmfleet"] and gateway["Restart"] == ["always"]
    assert "redis-server.service" in gateway["After"][0]
    assert ["useradd", "--system", "--user-group", "--no-create-home", "--shell",
            "/usr/sbin/nologin", "llmfleet"] in data["runcmd"]
    # The config the gateway reads is the one the edge carries, and the gateway's loader takes it.
    carried = tmp_path / "fleet.json"
    carried.write_text(files(data)["/etc/llmfleet/fleet.json"])
    assert load_yaml(carried).load_balancing.read_timeout_s == 120


def test_the_gateway_answers_before_the_sync_agent_turns_auth_on_in_nginx():
    data = edge_user_data("university-prod")
    gateway, sync_unit = unit(files(data)[GATEWAY_UNIT]), unit(files(data)[SYNC_UNIT])

    # "Started" means /health answers, so everything ordered after the gateway finds it up.
    [health] = gateway["ExecStartPost"]
    assert health.startswith("/usr/bin/curl ") and "http://127.0.0.1:8090/health" in health
    assert "llmfleet-gateway.service" in sync_unit["After"][0]
    assert "llmfleet-gateway.service" in sync_unit["Wants"][0]
    assert "llmfleet-gateway.service" in unit(
        files(data)["/etc/systemd/system/nginx.service.d/llmfleet.conf"])["After"][0]
    assert (runcmd_position(data, "enable", "llmfleet-gateway.service")
            < runcmd_position(data, "enable", "llmfleet-sync.service"))


def test_the_sync_agent_renders_the_gateway_stub_status_and_the_monitors_ports():
    data = edge_user_data("startup-prod")
    sync_unit = files(data)[SYNC_UNIT]
    args = sync._parser().parse_args(argv(sync_unit, "llmfleet.edge.sync"))

    assert (args.gateway, args.lease_port) == ("127.0.0.1:8090", 8091)
    assert args.status_listen == "127.0.0.1:8081"
    assert unit(sync_unit)["EnvironmentFile"] == ["/etc/llmfleet/edge.env"]
    assert args.metrics_address == PRIVATE_IP
    # Exactly the ports the monitor's Prometheus scrapes on instances with the edge role.
    config = from_pulumi_config_env(stack_config_env("startup-prod"), "startup-prod")
    scrape = yaml.safe_load(aws_prometheus_config(config, region="us-east-1",
                                                  stack="startup-prod"))
    edge_ports = {sd["port"] for job in scrape["scrape_configs"]
                  for sd in job.get("ec2_sd_configs", [])
                  if ["edge"] in (f["values"] for f in sd["filters"])}
    assert set(args.metrics_ports) == edge_ports and len(args.metrics_ports) == 4
    # The boot script writes the private address the unit reads.
    boot = data["runcmd"][runcmd_position(data, "/usr/local/lib/llmfleet/edge_boot.py")]
    assert boot[-1] == "/etc/llmfleet/edge.env"
    assert 'LLMFLEET_PRIVATE_IP={private_ip}' in files(data)[
        "/usr/local/lib/llmfleet/edge_boot.py"]


def test_the_edge_exporter_reads_nginxs_access_log_on_loopback():
    exporter = files(edge_user_data("example"))[EXPORTER_UNIT]
    assert argv(exporter, "llmfleet.observability.edge_exporter") == [
        "--access-log", "/var/log/nginx/access.log", "--host", "127.0.0.1", "--port", "9180"]
    settings = unit(exporter)
    assert settings["User"] == ["llmfleet"] and settings["SupplementaryGroups"] == ["adm"]
    assert settings["Restart"] == ["always"]


def test_the_packaged_exporters_bind_loopback_and_read_stub_status_and_redis():
    data = edge_user_data("example")
    assert {"prometheus-nginx-exporter", "prometheus-redis-exporter"} <= set(data["packages"])
    nginx = unit(files(data)[NGINX_EXPORTER])
    assert nginx["ExecStart"][0] == ""  # clears the package's command instead of adding one
    assert shlex.split(nginx["ExecStart"][1])[1:] == [
        "--web.listen-address=127.0.0.1:9113",
        "--nginx.scrape-uri=http://127.0.0.1:8081/stub_status"]
    redis_exporter = unit(files(data)[REDIS_EXPORTER])
    assert redis_exporter["ExecStart"][0] == ""
    assert shlex.split(redis_exporter["ExecStart"][1])[1:] == [
        "--web.listen-address=127.0.0.1:9121", "--redis.addr=redis://127.0.0.1:6379",
        "--redis.password-file=%d/redis-password.json"]
    assert redis_exporter["LoadCredential"] == [
        "redis-password.json:/etc/llmfleet/redis-exporter.json"]


def test_redis_is_loopback_only_persistent_and_its_password_is_made_on_the_instance():
    data = edge_user_data("university-prod")
    settings = [line for line in files(data)[REDIS_CONF].splitlines()
                if line and not line.startswith("#")]
    assert settings == ["bind 127.0.0.1", "protected-mode yes", "port 6379", "appendonly yes",
                        "appendfsync everysec", "include /etc/redis/llmfleet-auth.conf"]

    script = files(data)[REDIS_AUTH]
    assert "umask 077" in script
    assert "head -c 32 /dev/urandom" in script
    assert 'if [[ ! -s $password_file ]]' in script, "a password made before is kept"
    assert "printf 'requirepass %s\\n' \"$password\" > /etc/redis/llmfleet-auth.conf" in script
    assert "include /etc/redis/llmfleet.conf' >> /etc/redis/redis.conf" in script
    # Made after the package is installed, before anything that needs the password starts.
    assert (runcmd_position(data, REDIS_AUTH)
            < runcmd_position(data, "enable", "llmfleet-gateway.service"))


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
        pytest.skip("no packaged /etc/redis/redis.conf to start from")
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
