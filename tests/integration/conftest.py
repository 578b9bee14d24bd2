"""A real sandbox per test: simulated vLLM backends, Redis, the gateway and nginx, all on free
loopback ports; and a bare Redis for the limiter's own tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from llmfleet.config import validate
from llmfleet.local.sandbox import down, up
from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.ports import PORTS_VARIABLE, free_port
from llmfleet.local.sandbox.processes import wait_until

StartSandbox = Callable[..., dict[str, Any]]

# Every sandbox a test starts (and the `llmfleet up` processes they run) takes free ports
# instead of the preferred fixed ones, so a second test run or a user's own sandbox on this
# machine cannot race it for 9090 and the like.
os.environ[PORTS_VARIABLE] = "any"


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[StartSandbox]:
    """Start sandboxes with config overrides; all of them are stopped when the test ends,
    also when it fails. With auth on (the default) the result carries an unlimited
    `api_key` for tests that are not about limits. `supervise=False` for a test whose killed
    process must stay dead; `keep_keys=False` for Redis without persistence."""
    started: list[Path] = []

    def start(name: str = "sandbox", *, supervise: bool = True, keep_keys: bool = True,
              **sections: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {k: dict(v) for k, v in sections.items()}
        sandbox = data.setdefault("sandbox", {})
        for key in ("edge_port", "base_port", "redis_port", "gateway_port"):
            sandbox.setdefault(key, free_port())
        state_dir = tmp_path / name
        started.append(state_dir)
        config = validate(data, "test")
        box = up(config, state_dir, edge_port_explicit=True, supervise=supervise,
                 keep_keys=keep_keys).to_json()
        box["tiers"] = dict(config.rate_limits.tiers)
        box["api_key"] = None
        if config.sandbox.auth and "enterprise" in box["tiers"]:
            box["api_key"], _ = key_store(state_dir).create("tests", "enterprise")
        return box

    yield start
    for state_dir in started:
        down(state_dir)


@pytest.fixture
def bare_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A passwordless redis-server on a free loopback port, for the limiter's own tests."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", "127.0.0.1",
         "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        assert wait_until(answers, 10), "redis-server did not start"
        yield client
    finally:
        server.kill()
        server.wait()
