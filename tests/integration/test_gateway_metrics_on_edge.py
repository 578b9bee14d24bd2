"""The AWS edge's metrics path with the real programs: the gateway and the edge exporter on
loopback, nginx forwarding only their /metrics from the private address (127.0.0.2 stands in
for it), and auth_request still reaching the loopback gateway."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from children import stop_children

from llmfleet.config import FleetConfig
from llmfleet.edge.nginx import (
    GatewayHook,
    MetricsProxy,
    NginxPaths,
    check_nginx_conf,
    nginx_binary,
    render_nginx_conf,
)
from llmfleet.local.sandbox.ports import free_port, port_is_free
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

PRIVATE = "127.0.0.2"


def _port_free_on_both() -> int:
    """A port free on loopback and on the stand-in private address: both bind it."""
    while True:
        port = free_port()
        if port_is_free(port, PRIVATE):
            return port


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[dict[str, Any]]:
    gateway_port, exporter_port, edge_port = (_port_free_on_both() for _ in range(3))
    config_file = tmp_path / "fleet.json"
    config_file.write_text(FleetConfig().model_dump_json())
    paths = NginxPaths.under(tmp_path / "nginx")
    paths.make_dirs()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(
        FleetConfig(), [], listen=f"127.0.0.1:{edge_port}", paths=paths,
        gateway=GatewayHook(f"127.0.0.1:{gateway_port}"),
        metrics=MetricsProxy(PRIVATE, (gateway_port, exporter_port))))
    check = check_nginx_conf(conf)
    assert check.ok, check.output
    # No Redis: a request without a key is refused before the gateway would need it.
    commands = [
        [sys.executable, "-m", "llmfleet.gateway", "--host", "127.0.0.1", "--port",
         str(gateway_port), "--config", str(config_file), "--redis-url",
         f"redis://127.0.0.1:{free_port()}/0"],
        [sys.executable, "-m", "llmfleet.observability.edge_exporter", "--access-log",
         paths.access_log, "--host", "127.0.0.1", "--port", str(exporter_port)],
        [nginx_binary(), "-c", str(conf), "-e", paths.error_log, "-g", "daemon off;"],
    ]
    started = []
    try:
        for command in commands:
            started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        for url in (f"http://127.0.0.1:{gateway_port}/health",
                    f"http://127.0.0.1:{exporter_port}/health",
                    f"http://127.0.0.1:{edge_port}/health"):
            assert wait_until(lambda url=url: _answers(url), 15), f"{url} did not answer"
        yield {"endpoint": f"http://127.0.0.1:{edge_port}",
               "gateway": f"http://{PRIVATE}:{gateway_port}",
               "exporter": f"http://{PRIVATE}:{exporter_port}"}
    finally:
        stop_children(started)


def _sample(text: str, series: str) -> float:
    return float(re.search(rf"^{re.escape(series)} (\S+)$", text, re.M).group(1))


def test_the_monitor_reads_gateway_metrics_through_nginx_but_never_reaches_auth(edge):
    scraped = requests.get(edge["gateway"] + "/metrics", timeout=5)
    assert scraped.status_code == 200
    decisions = _sample(scraped.text, "llmfleet_gateway_decision_seconds_count")

    for path in ("/auth", "/health", "/metrics/../auth"):
        assert requests.get(edge["gateway"] + path, timeout=5).status_code == 404, path
    refused = requests.get(edge["endpoint"] + "/v1/models", timeout=5)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"

    # Only the client's request reached /auth; the monitor's tries never did.
    after = requests.get(edge["gateway"] + "/metrics", timeout=5).text
    assert _sample(after, "llmfleet_gateway_decision_seconds_count") == decisions + 1


def test_the_edge_exporter_counts_clients_responses_and_not_the_monitors_scrapes(edge):
    for _ in range(3):
        assert requests.get(edge["exporter"] + "/metrics", timeout=5).status_code == 200
    assert requests.get(edge["endpoint"] + "/v1/models", timeout=5).status_code == 401

    def counted() -> str:
        return requests.get(edge["exporter"] + "/metrics", timeout=5).text

    assert wait_until(
        lambda: _sample(counted(), 'llmfleet_edge_responses_total{class="4xx"}') == 1, 5), (
        "the exporter's counts: "
        + "; ".join(re.findall(r"^llmfleet_edge_\w+(?:\{.*?\})? \S+$", counted(), re.M)))
    assert _sample(counted(), 'llmfleet_edge_responses_total{class="2xx"}') == 0
