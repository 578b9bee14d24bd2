"""What must hold on an edge host: nginx runs, listens, its config passes `nginx -t`, and every
backend it sends traffic to answers its health check."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

# Runs on the host under test with its own python3, so it needs nothing but the standard library.
PROBE = ("import sys, urllib.request; "
         "sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=3).status == 200 else 1)")


def test_nginx_master_and_workers_are_running(host, facts: dict[str, Any]):
    processes = host.process.filter(comm="nginx")
    assert any("master process" in p.args for p in processes)
    assert any("worker process" in p.args for p in processes)


def test_edge_port_is_listening(host, facts: dict[str, Any]):
    edge = urlsplit(facts["endpoint"])
    assert host.socket(f"tcp://{edge.hostname}:{edge.port}").is_listening


def test_rendered_config_passes_nginx_t(host, facts: dict[str, Any]):
    conf = facts["nginx_conf"]
    scratch_log = host.check_output("mktemp")
    result = host.run(f"PATH=$PATH:/usr/sbin nginx -t -c {conf} -e {scratch_log}")
    assert result.rc == 0, result.stderr
    assert "test is successful" in result.stderr


def test_edge_answers_its_health_check(host, facts: dict[str, Any]):
    assert host.run(f"python3 -c '{PROBE}' {facts['endpoint']}/health").rc == 0


def test_every_backend_is_healthy(host, facts: dict[str, Any]):
    assert facts["backends"], "the host has no backends to check"
    for backend in facts["backends"]:
        result = host.run(f"python3 -c '{PROBE}' {backend['url']}/health")
        assert result.rc == 0, f"{backend['name']} at {backend['url']} is not healthy"


# Where an AWS edge runs them (llmfleet.services.EdgePorts).
DEFAULT_URLS = {"redis": "redis://127.0.0.1:6379/0", "gateway": "http://127.0.0.1:8090"}


def component(facts: dict[str, Any], name: str) -> dict[str, Any]:
    """A component every edge with API keys runs. An edge without keys says so in its facts
    (`"auth": false`); facts that merely leave it out fail, never skip: a check skipped for a
    missing entry would pass an edge whose Redis or gateway is missing."""
    if facts.get("auth", True) is False:
        pytest.skip(f"the facts say this edge runs without API keys, so without {name}")
    if name not in facts:
        pytest.fail(f"the host facts name no {name}: add its url (e.g. "
                    f'"{name}": {{"url": "{DEFAULT_URLS[name]}"}} on an AWS edge), or '
                    '"auth": false for an edge without API keys')
    return facts[name]


def test_redis_listens_on_loopback_only_and_wants_a_password(host, facts: dict[str, Any]):
    port = urlsplit(component(facts, "redis")["url"]).port
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    probe = (f"import socket; s = socket.create_connection(('127.0.0.1', {port}), 3); "
             "s.sendall(b'GET x\\r\\n'); print(s.recv(64).decode())")
    assert "NOAUTH" in host.check_output(f'python3 -c "{probe}"')


def test_gateway_answers_its_health_check(host, facts: dict[str, Any]):
    url = component(facts, "gateway")["url"]
    assert host.run(f"python3 -c '{PROBE}' {url}/health").rc == 0
