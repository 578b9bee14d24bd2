"""Redis and the gateway in the sandbox: API keys and per-tier rate limits at the edge.

Redis binds loopback with protected mode and a random password (kept in a 0600 file), and no
persistence: the sandbox's keys live as long as the sandbox.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path

from llmfleet.config import load_yaml
from llmfleet.edge.nginx import GatewayHook
from llmfleet.gateway.keys import KeyStore
from llmfleet.gateway.leases import lease_ttl_s
from llmfleet.local.sandbox.ports import LOOPBACK, free_udp_port
from llmfleet.local.sandbox.run import SandboxError, SandboxRun


def start_redis(run: SandboxRun) -> None:
    if not run.config.sandbox.auth:
        return
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
    if binary is None:
        raise SandboxError("redis-server is not installed; run scripts/quickstart "
                           "(or apt-get install redis-server)")
    port = run.port(run.config.sandbox.redis_port)
    folder = run.state_dir / "redis"
    folder.mkdir(mode=0o700, exist_ok=True)
    password = secrets.token_urlsafe(24)
    password_file = folder / "password"
    password_file.touch(mode=0o600)
    password_file.write_text(password)
    conf = folder / "redis.conf"
    conf.touch(mode=0o600)
    conf.write_text("\n".join([
        f"bind {LOOPBACK}", f"port {port}", "protected-mode yes", f"requirepass {password}",
        'save ""', "appendonly no", f"dir {folder}", "daemonize no", 'logfile ""', "",
    ]))
    url = f"redis://{LOOPBACK}:{port}/0"
    run.say(f"starting redis on {url}")
    run.launch("redis", "redis", [binary, str(conf)], url, url)
    run.facts["redis"] = {"url": url, "password_file": str(password_file)}


def start_gateway(run: SandboxRun) -> None:
    if not run.config.sandbox.auth:
        return
    port = run.port(run.config.sandbox.gateway_port)
    lease_port = free_udp_port()
    config_file = run.state_dir / "config.json"
    config_file.write_text(run.config.model_dump_json(indent=2))
    url = f"http://{LOOPBACK}:{port}"
    redis = run.facts["redis"]
    lease_ttl = lease_ttl_s(run.config.load_balancing.read_timeout_s)
    run.say(f"starting gateway on {url}")
    run.launch("gateway", "gateway", [
        sys.executable, "-m", "llmfleet.gateway", "--host", LOOPBACK, "--port", str(port),
        "--config", str(config_file), "--redis-url", redis["url"],
        "--redis-password-file", redis["password_file"],
        "--lease-port", str(lease_port), "--lease-ttl", str(lease_ttl),
    ], url, url + "/health")
    run.facts["gateway"] = {"address": f"{LOOPBACK}:{port}", "lease_port": lease_port}


def key_store(state_dir: Path, state: dict) -> KeyStore:
    """The running sandbox's API keys, with the tiers it was started with."""
    facts = state.get("facts", {})
    if "redis" not in facts:
        raise SandboxError("no sandbox with Redis is running here; start one with "
                           "`llmfleet up`, or name a Redis with --redis-url")
    config = load_yaml(state_dir / "config.json")
    return KeyStore.connect(facts["redis"]["url"],
                            Path(facts["redis"]["password_file"]).read_text(),
                            set(config.rate_limits.tiers))


def gateway_hook(run: SandboxRun) -> GatewayHook | None:
    gateway = run.facts.get("gateway")
    return GatewayHook(gateway["address"], gateway["lease_port"]) if gateway else None
