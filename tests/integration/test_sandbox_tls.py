"""`llmfleet up --tls`: the official OpenAI client, trusting only the sandbox's own CA, streams
and gets plain answers over HTTPS through the real nginx; plain HTTP redirects to HTTPS, and
a client that does not trust the CA is refused."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.ports import free_port

LLMFLEET = str(Path(sys.executable).with_name("llmfleet"))


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    state = tmp_path_factory.mktemp("tls")
    config = state / "sandbox.yaml"
    config.write_text(f"sandbox: {{backends: 1, monitoring: false, base_port: {free_port()}, "
                      f"redis_port: {free_port()}, gateway_port: {free_port()}}}\n")
    try:
        started = subprocess.run(
            [LLMFLEET, "up", "--tls", "--json", "--config", str(config), "--port",
             str(free_port()), "--state-dir", str(state)],
            capture_output=True, text=True, timeout=180, check=False)
        assert started.returncode == 0, started.stderr
        status = subprocess.run([LLMFLEET, "status", "--json", "--state-dir", str(state)],
                                capture_output=True, text=True, timeout=60, check=True)
        box = json.loads(status.stdout)
        box["api_key"], _ = key_store(state).create("tls-tests", "enterprise")
        yield box
    finally:
        subprocess.run([LLMFLEET, "down", "--state-dir", str(state)], capture_output=True,
                       timeout=120, check=False)


def client(box: dict, **http: object) -> openai.OpenAI:
    """The official client; `verify` goes to its own HTTP client."""
    return openai.OpenAI(base_url=box["endpoint"] + "/v1", api_key=box["api_key"],
                         max_retries=0, http_client=openai.DefaultHttpxClient(**http))


def test_status_names_the_ca_and_the_endpoint_is_https(box):
    assert box["endpoint"].startswith("https://127.0.0.1:")
    assert Path(box["ca_file"]).is_file()
    assert Path(box["ca_file"]).parent.is_relative_to(box["state_dir"])


def test_a_plain_request_through_https_with_the_sandboxs_ca(box):
    api = client(box, verify=ssl.create_default_context(cafile=box["ca_file"]))
    model = api.models.list().data[0].id
    answer = api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert answer.choices[0].message.content


def test_a_streamed_answer_arrives_chunk_by_chunk_over_https(box):
    api = client(box, verify=ssl.create_default_context(cafile=box["ca_file"]))
    model = api.models.list().data[0].id
    arrivals = []
    with api.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "count"}], max_tokens=64,
            stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
    assert len(arrivals) >= 16
    # Buffered, every token would arrive in the same instant at the end.
    assert arrivals[-1] - arrivals[0] > 0.05
    assert len({round(t, 3) for t in arrivals}) > len(arrivals) // 2


def test_the_sandboxs_tls_is_1_2_or_newer_only(box):
    host, port = box["endpoint"].removeprefix("https://").split(":")
    for version, accepted in [(ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True),
                              (ssl.TLSVersion.TLSv1_3, True)]:
        context = ssl.create_default_context(cafile=box["ca_file"])
        context.set_ciphers("ALL:@SECLEVEL=0")
        context.minimum_version = context.maximum_version = version
        try:
            with socket.create_connection((host, int(port)), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version() == version.name.replace("v1_", "v1.")
                shaken = True
        except ssl.SSLError:
            shaken = False
        assert shaken is accepted, version


def test_a_client_that_does_not_trust_the_ca_is_refused(box):
    with pytest.raises(openai.APIConnectionError) as refused:
        client(box).models.list()  # the system's CAs only
    assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value.__cause__)


def test_plain_http_redirects_to_https_and_keeps_health_for_the_boot_check(box):
    https_port = box["endpoint"].rsplit(":", 1)[1]
    with open(Path(box["state_dir"]) / "state.json") as state:
        plain = f"http://127.0.0.1:{json.load(state)['edge_ports']['http']}"
    assert requests.get(plain + "/health", timeout=5).status_code == 200
    moved = requests.post(plain + "/v1/chat/completions", json={}, timeout=5,
                          allow_redirects=False)
    assert moved.status_code == 308
    assert moved.headers["location"] == f"https://127.0.0.1:{https_port}/v1/chat/completions"


def test_llmfleet_load_trusts_the_sandboxs_ca_by_itself_and_no_other_server(box, tmp_path):
    # The default --url is the sandbox's HTTPS edge, and its CA comes with it.
    run = subprocess.run(
        [LLMFLEET, "load", "--state-dir", box["state_dir"], "--api-key", box["api_key"],
         "-n", "6", "-c", "3", "--output-tokens", "fixed:4", "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["ok"], report["total_requests"], report["errors_by_status"]) == (6, 6, {})

    # Another CA (here: none the server's certificate chains to) is refused at the handshake.
    other = tmp_path / "other-ca.pem"
    other.write_text(Path(certifi_bundle()).read_text())
    refused = subprocess.run(
        [LLMFLEET, "load", "--url", box["endpoint"], "--ca-file", str(other), "--api-key",
         box["api_key"], "-n", "2", "--output-tokens", "fixed:4", "--json",
         "--state-dir", box["state_dir"]],
        capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0
    assert "certificate" in (refused.stderr + refused.stdout).lower()


def certifi_bundle() -> str:
    import certifi

    return certifi.where()
