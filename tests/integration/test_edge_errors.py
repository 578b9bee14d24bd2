"""Every refusal nginx makes itself is OpenAI-shaped JSON with the right status, on a real
nginx: a request it cannot read (400), headers too large (431, e.g. a 50 kB Authorization
header), a URI too long (414), a method (405) or path (404) it does not serve, a body too
large (413), a transfer encoding it does not implement (501), an HTTP version it does not speak
(505), and no model server to take a request (502). Never nginx's HTML page."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from children import stop_children

from llmfleet.config import FleetConfig, validate
from llmfleet.edge.nginx import (
    ERROR_PAGE_PREFIX,
    NginxPaths,
    Upstream,
    check_nginx_conf,
    nginx_binary,
    render_nginx_conf,
)
from llmfleet.local.sandbox import down, up
from llmfleet.local.sandbox.auth import key_store
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until

pytestmark = pytest.mark.integration

HEAD = b"Host: edge\r\nConnection: close\r\n"
CASES = {
    "50kB-authorization": (b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"Authorization: Bearer "
                           + b"k" * 50_000 + b"\r\n\r\n", 431, "request_headers_too_large"),
    "200-headers-of-1kB": (b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"".join(
        b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(200)) + b"\r\n",
        431, "request_headers_too_large"),
    "garbage-request-line": (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    "control-byte-in-method": (b"G\x01T /v1/models HTTP/1.1\r\n" + HEAD + b"\r\n",
                               400, "bad_request"),
    "no-host": (b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "bad_request"),
    "bad-content-length": (b"POST /v1/completions HTTP/1.1\r\n" + HEAD
                           + b"Content-Length: many\r\n\r\n", 400, "bad_request"),
    "nul-in-header": (b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"X-A: a\x00b\r\n\r\n",
                      400, "bad_request"),
    "40kB-uri": (b"GET /v1/" + b"a" * 40_000 + b" HTTP/1.1\r\n" + HEAD + b"\r\n",
                 414, "uri_too_long"),
    "trace": (b"TRACE /v1/models HTTP/1.1\r\n" + HEAD + b"\r\n", 405, "method_not_allowed"),
    "delete-under-v1": (b"DELETE /v1/models HTTP/1.1\r\n" + HEAD + b"\r\n",
                        405, "method_not_allowed"),
    "unknown-method-under-v1": (b"QUERY /v1/chat/completions HTTP/1.1\r\n" + HEAD + b"\r\n",
                                405, "method_not_allowed"),
    "post-to-models": (b"POST /v1/models HTTP/1.1\r\n" + HEAD + b"Content-Length: 0\r\n\r\n",
                       405, "method_not_allowed"),
    "get-a-completion": (b"GET /v1/chat/completions HTTP/1.1\r\n" + HEAD + b"\r\n",
                         405, "method_not_allowed"),
    "unknown-path": (b"GET /admin HTTP/1.1\r\n" + HEAD + b"\r\n", 404, "not_found"),
    # Under /v1/, only the model servers' OpenAI routes pass: not vLLM's LoRA loading, not a
    # path FastAPI would answer with {"detail": "Not Found"}.
    "unknown-path-under-v1": (b"GET /v1/secrets HTTP/1.1\r\n" + HEAD + b"\r\n",
                              404, "not_found"),
    "lora-loading": (b"POST /v1/load_lora_adapter HTTP/1.1\r\n" + HEAD
                     + b"Content-Length: 2\r\n\r\n{}", 404, "not_found"),
    "a-route-with-a-tail": (b"POST /v1/chat/completions/x HTTP/1.1\r\n" + HEAD
                            + b"Content-Length: 2\r\n\r\n{}", 404, "not_found"),
    "internal-auth-path": (b"GET /_llmfleet_auth HTTP/1.1\r\n" + HEAD + b"\r\n",
                           404, "not_found"),
    "error-page-path": (b"GET " + ERROR_PAGE_PREFIX.encode() + b"bad_request HTTP/1.1\r\n"
                        + HEAD + b"\r\n", 404, "not_found"),
    "2MB-body": (b"POST /v1/chat/completions HTTP/1.1\r\n" + HEAD
                 + b"Content-Length: 2000000\r\n\r\n", 413, "request_too_large"),
    "gzip-transfer-encoding": (b"POST /v1/chat/completions HTTP/1.1\r\n" + HEAD
                               + b"Transfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"),
    "http-2-request-line": (b"GET /v1/models HTTP/2.0\r\nHost: edge\r\n\r\n",
                            505, "http_version_not_supported"),
}


@pytest.fixture(scope="module", params=[True, False], ids=["keys", "no-keys"])
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("edge-errors")
    config = validate({"sandbox": {"auth": request.param, "monitoring": False, **{
        k: free_port() for k in ("edge_port", "base_port", "redis_port", "gateway_port")}}},
        "test")
    try:
        yield up(config, state_dir, edge_port_explicit=True, supervise=False).to_json()
    finally:
        down(state_dir)


def exchange(endpoint: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    address = urlsplit(endpoint)
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(raw)
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def openai_error(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert b"<html" not in body.lower()
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("case", CASES)
def test_nginx_refusals_are_openai_shaped_json(edge, case):
    raw, status, code = CASES[case]
    answered, headers, body = exchange(edge["endpoint"], raw)
    assert answered == status, body[:200]
    assert openai_error(headers, body)["code"] == code


def test_no_model_server_to_take_a_request_is_a_json_502(start_sandbox):
    box = start_sandbox(sandbox={"monitoring": False}, supervise=False)  # backends stay dead
    for backend in box["backends"]:
        os.kill(backend["pid"], signal.SIGKILL)
    key = box["api_key"]
    raw = (b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"Authorization: Bearer "
           + key.encode() + b"\r\n\r\n")
    assert wait_until(lambda: exchange(box["endpoint"], raw)[0] == 502, 10)
    status, headers, body = exchange(box["endpoint"], raw)
    assert status == 502
    assert openai_error(headers, body)["code"] == "upstream_unavailable"
    assert headers["x-llmfleet-upstream"]  # the sandbox shows which servers were tried


@pytest.mark.parametrize("auth", [True, False], ids=["keys", "no-keys"])
def test_a_failure_of_nginx_itself_is_a_json_500_not_the_key_service(start_sandbox, auth):
    # A body over 16 kB goes to a temp file; with its directory made a plain file, nginx fails
    # after the key passed. With keys on, that must not read "the API key service is
    # unavailable": the key service answered.
    box = start_sandbox(sandbox={"monitoring": False, "auth": auth})
    conf = next(Path(box["state_dir"]).rglob("nginx.conf")).read_text()
    temp = Path(re.search(r"client_body_temp_path (\S+);", conf).group(1))
    shutil.rmtree(temp, ignore_errors=True)
    temp.write_text("not a directory")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 20_000}]})
    key = (b"Authorization: Bearer " + box["api_key"].encode() + b"\r\n") if auth else b""
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\n" + HEAD + key
           + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
           + body.encode())
    status, headers, answer = exchange(box["endpoint"], raw)
    assert status == 500, answer[:200]
    assert openai_error(headers, answer)["code"] == "internal_error"
    assert "retry-after" not in headers


def test_with_tls_the_plain_http_server_refuses_as_json_too(tmp_path):
    state_dir = tmp_path / "tls"
    config = validate({"sandbox": {"backends": 1, "monitoring": False, **{
        k: free_port() for k in ("edge_port", "base_port", "redis_port", "gateway_port")}}},
        "test")
    try:
        up(config, state_dir, edge_port_explicit=True, supervise=False, tls=True)
        plain = json.loads((state_dir / "state.json").read_text())["edge_ports"]["http"]
        for case in ("garbage-request-line", "50kB-authorization", "40kB-uri",
                     "http-2-request-line"):
            raw, status, code = CASES[case]
            answered, headers, body = exchange(f"http://127.0.0.1:{plain}", raw)
            assert answered == status, (case, body[:200])
            assert openai_error(headers, body)["code"] == code
    finally:
        down(state_dir)


def test_slow_clients_hold_no_worker_and_reach_no_model_server(edge):
    """Clients that trickle their headers or their body hold only their own connection:
    nginx keeps serving everyone else, and nothing reaches a model server until a request
    is whole (the cuts by the client timeouts: the test below)."""
    address = urlsplit(edge["endpoint"])
    backends = [b["url"] for b in edge["backends"]]

    def served() -> int:
        total = 0
        for url in backends:
            with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port),
                                          timeout=5) as conn:
                # Every request as it arrived, finished or not.
                conn.sendall(b"GET /_sim/requests HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n")
                reply = b""
                while chunk := conn.recv(65536):
                    reply += chunk
            total += len(json.loads(reply.partition(b"\r\n\r\n")[2])["requests"])
        return total

    before = served()
    slow = []
    try:
        for n in range(300):
            conn = socket.create_connection((address.hostname, address.port), timeout=10)
            if n % 2:  # half the headers, and nothing more
                conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\n")
            else:  # whole headers, 1 byte of a 1,000-byte body
                conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            slow.append(conn)
        for conn in slow[::10]:
            conn.sendall(b"X")  # still trickling
        key = b""
        if edge.get("gateway"):
            raw_key, _ = key_store(Path(edge["state_dir"])).create("patient", "enterprise")
            key = b"Authorization: Bearer " + raw_key.encode() + b"\r\n"
        for _ in range(20):
            status, _, body = exchange(edge["endpoint"],
                                       b"GET /v1/models HTTP/1.1\r\n" + HEAD + key + b"\r\n")
            assert status == 200, body[:200]
        # The 20 whole requests reached a model server; none of the slow ones did.
        assert served() == before + 20
    finally:
        for conn in slow:
            conn.close()


SLOW_TIMEOUT_S = 2.0  # the edge's client timeout in the slow-client test (60 s by default)


@pytest.fixture
def quick_edge(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """nginx from the template with a 2 s client timeout, in front of one simulated backend."""
    backend_port, edge_port = free_port(), free_port()
    paths = NginxPaths.under(tmp_path / "nginx")
    paths.make_dirs()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(
        FleetConfig(), [Upstream("backend-1", "127.0.0.1", backend_port)],
        listen=f"127.0.0.1:{edge_port}", paths=paths, client_timeout_s=SLOW_TIMEOUT_S))
    check = check_nginx_conf(conf)
    assert check.ok, check.output
    started = [
        subprocess.Popen([sys.executable, "-m", "llmfleet.local.simbackend", "--port",
                          str(backend_port), "--time-scale", "0.01"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([nginx_binary(), "-c", str(conf), "-e", paths.error_log,
                          "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
    ]
    try:
        edge = f"http://127.0.0.1:{edge_port}"

        def serves() -> bool:
            try:
                return exchange(edge, b"GET /v1/models HTTP/1.1\r\n" + HEAD + b"\r\n")[0] == 200
            except OSError:
                return False

        assert wait_until(serves, 15)
        yield {"endpoint": edge, "backend_port": backend_port,
               "backend": f"http://127.0.0.1:{backend_port}"}
    finally:
        stop_children(started)


def _connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:port (nginx's to the model server)."""
    remote = f"0100007F:{port:04X}"
    return sum(line.split()[2] == remote and line.split()[3] == "01"
               for line in Path("/proc/net/tcp").read_text().splitlines()[1:])


def _trickle(conn: socket.socket, data: bytes, gap_s: float, until_s: float
             ) -> tuple[float | None, bytes, float]:
    """Send `data` a byte every `gap_s` s; return the seconds until nginx cut the connection
    (None if it had not within `until_s`), what it answered, and when the last byte went."""
    started = sent = time.monotonic()
    for byte in data:
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - started, b"", sent
        sent = time.monotonic()
        # Until the next byte is due: does nginx answer or close?
        readable, _, _ = select.select([conn], [], [], gap_s)
        if readable:
            try:
                answer = conn.recv(65536)
            except ConnectionResetError:
                answer = b""
            return time.monotonic() - started, answer, sent
        if time.monotonic() - started > until_s:
            break
    return None, b"", sent


def test_slow_clients_are_cut_by_the_client_timeout_and_reach_no_model_server(quick_edge):
    """A head trickled a byte a second is cut once the client timeout has passed since it
    began (client_header_timeout is for the whole head). A body is cut when it pauses longer
    than the timeout (client_body_timeout is between two reads): one that keeps trickling a
    byte a second is not, but holds no model-server connection meanwhile. Nothing reaches the
    model server. With the timeout at 2 s instead of 60."""
    address = urlsplit(quick_edge["endpoint"])

    def connect() -> socket.socket:
        return socket.create_connection((address.hostname, address.port), timeout=10)

    def recorded() -> int:
        return len(requests.get(quick_edge["backend"] + "/_sim/requests", timeout=5
                                ).json()["requests"])

    before = recorded()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\n"
    with connect() as conn:
        cut_after, answer, _ = _trickle(conn, head + b"X-Slow: " + b"a" * 60, 1.0, 10)
    assert cut_after is not None and SLOW_TIMEOUT_S - 0.5 <= cut_after <= SLOW_TIMEOUT_S + 2
    assert answer == b""

    whole_head = head + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with connect() as conn:
        conn.sendall(whole_head)
        cut_after, answer, stopped = _trickle(conn, b"{" + b" " * 999, 1.0,
                                              3 * SLOW_TIMEOUT_S)
        assert cut_after is None, answer  # still trickling: not cut
        assert _connections_to(quick_edge["backend_port"]) == 0
        # It stops: cut once it has paused for the timeout (nginx logs a 408 and closes the
        # connection without an answer, as for the head: no HTML page either).
        readable, _, _ = select.select([conn], [], [], SLOW_TIMEOUT_S + 3)
        assert readable and time.monotonic() - stopped >= SLOW_TIMEOUT_S - 0.5
        assert conn.recv(65536) == b""
    assert recorded() == before
