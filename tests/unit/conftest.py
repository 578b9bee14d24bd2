"""One real redis-server for the unit tests that need Redis's own behaviour (its Lua, its
clock, its pub/sub): started once per session on a free loopback port, emptied before each test.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from llmfleet.local.sandbox.ports import free_port


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a passwordless redis-server that keeps nothing on disk."""
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
    if binary is None:
        pytest.fail("redis-server is not installed: run ./scripts/bootstrap.sh (or "
                    "'sudo apt-get install -y redis-server')")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.02)
        yield port
    finally:
        client.close()
        server.kill()
        server.wait()


@pytest.fixture
def redis_db(redis_port: int) -> Iterator[redis.Redis]:
    """A client of the session's Redis, emptied first: each test starts from nothing."""
    client = redis.Redis(port=redis_port, decode_responses=True)
    client.flushall()
    yield client
    client.close()

