"""A burst at the auth hop: nginx opens a connection to the gateway for each auth subrequest in
flight, so a burst can fill the gateway's accept queue. Requests must then wait their turn,
never be refused: limits decide who gets in, not connection setup."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import requests
from children import stop_children

from llmfleet.config import FleetConfig
from llmfleet.edge.nginx import (
    GatewayHook,
    NginxPaths,
    Upstream,
    check_nginx_conf,
    nginx_binary,
    render_nginx_conf,
)
from llmfleet.gateway.keys import KeyStore
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

BACKLOG = 32  # the kernel queues BACKLOG + 1 connections, then drops further SYNs
# Twice the queue: the half whose SYNs were dropped sends them again 1 s later, by when the
# gateway has emptied its queue. (Far beyond that, resent SYNs arriving together overflow the
# queue again, and TCP's back-off goes past any sensible timeout: the backlog is what keeps a
# burst from overflowing, the connect timeout what absorbs a small overflow.)
BURST = 64


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def accept_queue(port: int) -> int:
    """Connections waiting for the gateway's accept() (a listening socket's rx_queue)."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def edge(tmp_path: Path, bare_redis: redis.Redis) -> Iterator[dict[str, Any]]:
    gateway_port, backend_port, edge_port = free_port(), free_port(), free_port()
    config = FleetConfig()
    config_file = tmp_path / "fleet.json"
    config_file.write_text(config.model_dump_json())
    paths = NginxPaths.under(tmp_path / "nginx")
    paths.make_dirs()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(
        config, [Upstream("backend-1", "127.0.0.1", backend_port)],
        listen=f"127.0.0.1:{edge_port}", paths=paths,
        gateway=GatewayHook(f"127.0.0.1:{gateway_port}")))
    check = check_nginx_conf(conf)
    assert check.ok, check.output
    redis_port = bare_redis.connection_pool.connection_kwargs["port"]
    key, _ = KeyStore(bare_redis, set(config.rate_limits.tiers)).create("burst", "enterprise")
    commands = {
        "backend": [sys.executable, "-m", "llmfleet.local.simbackend", "--host", "127.0.0.1",
                    "--port", str(backend_port), "--time-scale", "0.01"],
        "gateway": [sys.executable, "-m", "llmfleet.gateway", "--host", "127.0.0.1",
                    "--port", str(gateway_port), "--config", str(config_file),
                    "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                    "--backlog", str(BACKLOG)],
        "nginx": [nginx_binary(), "-c", str(conf), "-e", paths.error_log, "-g", "daemon off;"],
    }
    started: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            started[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
        for url in (f"http://127.0.0.1:{backend_port}/health",
                    f"http://127.0.0.1:{gateway_port}/health",
                    f"http://127.0.0.1:{edge_port}/health"):
            assert wait_until(lambda url=url: _answers(url), 15), f"{url} did not answer"
        yield {"endpoint": f"http://127.0.0.1:{edge_port}", "key": key,
               "gateway": started["gateway"], "gateway_port": gateway_port,
               "error_log": Path(paths.error_log)}
    finally:
        stop_children(started.values())


async def _burst(url: str, key: str, count: int) -> list[int]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async def one() -> int:
            async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as reply:
                await reply.read()
                return reply.status
        return await asyncio.gather(*(one() for _ in range(count)))


def test_a_burst_that_overflows_the_gateways_accept_queue_waits_and_is_admitted(edge):
    gateway = edge["gateway"]
    # Stopped, the gateway accepts nothing: the burst's connections fill its queue at once,
    # and the kernel drops the SYNs of the rest, as when a real burst outruns accept().
    os.kill(gateway.pid, signal.SIGSTOP)
    with ThreadPoolExecutor(1) as pool:
        try:
            burst = pool.submit(asyncio.run, _burst(edge["endpoint"] + "/v1/models",
                                                    edge["key"], BURST))
            assert wait_until(lambda: accept_queue(edge["gateway_port"]) > BACKLOG, 10)
        finally:
            os.kill(gateway.pid, signal.SIGCONT)
        statuses = burst.result(timeout=60)
    assert statuses == [200] * BURST, edge["error_log"].read_text()[-2000:]
