"""The edge's nginx config: every rendering here is also accepted by the real `nginx -t`."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from llmfleet.config import validate
from llmfleet.edge.nginx import (
    ERROR_PAGE_PREFIX,
    ERROR_PAGES,
    WORKER_CONNECTIONS,
    MetricsProxy,
    NginxPaths,
    TlsFiles,
    Upstream,
    check_nginx_conf,
    render_nginx_conf,
)

THREE = [Upstream(f"gpu-{i}", "10.0.1.1" + str(i), 8000) for i in range(3)]


def render_checked(tmp_path: Path, data: dict, upstreams: list[Upstream]) -> str:
    """Render into tmp_path and require `nginx -t` to accept it."""
    paths = NginxPaths.under(tmp_path)
    paths.make_dirs()
    text = render_nginx_conf(validate(data, "test"), upstreams, paths=paths)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    check = check_nginx_conf(conf)
    assert check.ok, check.output
    return text


def upstream_block(text: str) -> str:
    return re.search(r"upstream vllm_fleet \{(.*?)\n    \}", text, re.S).group(1)


def test_seed_upstream_least_conn_three_servers_keepalive_and_failure_limits(tmp_path):
    block = upstream_block(render_checked(tmp_path, {}, THREE))
    assert "least_conn;" in block
    assert "keepalive 32;" in block
    servers = re.findall(r"server (\S+) (.*);", block)
    assert [s[0] for s in servers] == ["10.0.1.10:8000", "10.0.1.11:8000", "10.0.1.12:8000"]
    assert all("max_fails=3 fail_timeout=30s" in s[1] for s in servers)
    # A shared zone makes least_conn count connections across all workers, not per worker.
    assert re.search(r"zone vllm_fleet \d+k;", block)


def test_a_burst_fits_the_accept_queue_and_one_worker(tmp_path):
    # 5,000 clients at once: the accept queue holds all of them, one worker can hold all of
    # them with their upstream connections, and the workers may open that many files.
    text = render_checked(tmp_path, {}, THREE)
    backlog = re.search(r"listen 127\.0\.0\.1:8080 backlog=(\d+);", text)
    assert backlog and int(backlog.group(1)) >= 5000
    connections = int(re.search(r"worker_connections (\d+);", text).group(1))
    assert connections >= 2 * 5000
    assert int(re.search(r"worker_rlimit_nofile (\d+);", text).group(1)) >= connections


def test_burst_sizing_follows_the_render_parameters(tmp_path):
    paths = NginxPaths.under(tmp_path)
    paths.make_dirs()
    text = render_nginx_conf(validate({}, "t"), THREE, paths=paths, listen="127.0.0.1:9999",
                             worker_connections=4096, listen_backlog=1024)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    assert check_nginx_conf(conf).ok
    assert "listen 127.0.0.1:9999 backlog=1024;" in text
    assert "worker_connections 4096;" in text
    assert "worker_rlimit_nofile 8192;" in text


def test_streaming_directives_reach_the_proxied_location(tmp_path):
    text = render_checked(tmp_path, {}, THREE)
    location = re.search(r"location /v1/ \{(.*?)\n        \}", text, re.S).group(1)
    for directive in ("proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                      "proxy_buffering off;", "proxy_cache off;", "proxy_read_timeout 300s;"):
        assert directive in location
    assert "gzip off;" in text


def test_failed_requests_move_on_a_bounded_number_of_times(tmp_path):
    text = render_checked(tmp_path, {"load_balancing": {"next_upstream_tries": 3,
                                                         "next_upstream_timeout_s": 7.5}}, THREE)
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in text
    assert "proxy_next_upstream_tries 3;" in text
    assert "proxy_next_upstream_timeout 7500ms;" in text


def test_by_default_a_request_moves_on_after_a_long_wait_but_never_after_a_read_timeout(
        tmp_path):
    """A model server frozen for tens of seconds resets, when it resumes, the requests sent
    to it meanwhile; they must still move on. A read timeout must not (it would double)."""
    location = re.search(r"location /v1/ \{(.*?)\n        \}", render_checked(tmp_path, {}, THREE),
                         re.S).group(1)
    window = int(re.search(r"proxy_next_upstream_timeout (\d+)s;", location).group(1))
    read = int(re.search(r"proxy_read_timeout (\d+)s;", location).group(1))
    assert 30 <= window < read


def test_client_timeouts_are_nginx_s_60_s_unless_shortened(tmp_path):
    assert re.findall(r"client_(header|body)_timeout (\S+);", render_checked(tmp_path, {}, THREE)
                      ) == [("header", "60s"), ("body", "60s")]
    short = render_nginx_conf(validate({}, "test"), THREE, client_timeout_s=2.5)
    assert "client_header_timeout 2500ms;" in short and "client_body_timeout 2500ms;" in short


def test_round_robin_drops_least_conn(tmp_path):
    text = render_checked(tmp_path, {"load_balancing": {"strategy": "round_robin"}}, THREE)
    assert "least_conn" not in upstream_block(text)


def test_gpu_weights_and_draining_servers(tmp_path):
    data = {
        "fleet": {"instance_types": [{"type": "g4dn.xlarge"}, {"type": "g5.xlarge"}]},
        "load_balancing": {"weights": {"g5.xlarge": 3}},
    }
    upstreams = [
        Upstream("t4", "10.0.0.1", 8000, instance_type="g4dn.xlarge"),
        Upstream("a10g", "10.0.0.2", 8000, instance_type="g5.xlarge"),
        Upstream("leaving", "10.0.0.3", 8000, instance_type="g5.xlarge", down=True),
    ]
    block = upstream_block(render_checked(tmp_path, data, upstreams))
    assert re.search(r"server 10.0.0.1:8000 weight=1 .*;", block)
    assert re.search(r"server 10.0.0.2:8000 weight=3 .*;", block)
    assert re.search(r"server 10.0.0.3:8000 weight=3 .* down;", block)


def test_no_servers_still_renders_a_valid_config(tmp_path):
    block = upstream_block(render_checked(tmp_path, {}, []))
    assert re.search(r"server \S+ down;", block)


def test_body_limit_keepalive_off_and_timeouts_follow_the_config(tmp_path):
    text = render_checked(tmp_path, {"load_balancing": {
        "max_body_size": "256k", "keepalive": 0, "read_timeout_s": 600,
        "connect_timeout_s": 0.5}}, THREE)
    assert "client_max_body_size 256k;" in text
    assert "keepalive 32" not in text and "keepalive " not in upstream_block(text)
    assert "proxy_read_timeout 600s;" in text
    assert "proxy_connect_timeout 500ms;" in text


@pytest.mark.parametrize("page", ERROR_PAGES, ids=[p[0] for p in ERROR_PAGES])
def test_edge_errors_are_openai_shaped_json(tmp_path, page):
    name, status, kind, code, _ = page
    text = render_checked(tmp_path, {}, THREE)
    page_uri = ERROR_PAGE_PREFIX + name
    assert f"error_page {status} = {page_uri};" in text
    body = re.search(rf"location = {page_uri} \{{\s*internal;.*?return {status} '(.*?)';",
                     text, re.S).group(1)
    error = json.loads(body)["error"]
    assert (error["type"], error["code"], error["param"]) == (kind, code, None)
    assert error["message"]


def test_upstream_header_only_when_asked(tmp_path):
    assert "X-LLMFleet-Upstream" not in render_checked(tmp_path, {}, THREE)
    shown = render_checked(tmp_path, {"load_balancing": {"expose_upstream_header": True}}, THREE)
    assert "add_header X-LLMFleet-Upstream $upstream_addr always;" in shown


def test_nginx_t_rejects_a_broken_rendering(tmp_path):
    paths = NginxPaths.under(tmp_path)
    paths.make_dirs()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(validate({}, "t"), THREE, paths=paths)
                    .replace("least_conn;", "least_conn_typo;"))
    check = check_nginx_conf(conf)
    assert not check.ok
    assert "least_conn_typo" in check.output


def test_stub_status_server_only_when_asked_and_only_on_loopback(tmp_path):
    assert "stub_status;" not in render_checked(tmp_path, {}, THREE)
    paths = NginxPaths.under(tmp_path)
    paths.make_dirs()
    text = render_nginx_conf(validate({}, "t"), THREE, paths=paths, status_listen="127.0.0.1:8081")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    assert check_nginx_conf(conf).ok
    server = re.search(r"listen 127.0.0.1:8081;(.*?)\n    \}", text, re.S).group(1)
    assert "stub_status;" in server and "allow 127.0.0.1;" in server and "deny all;" in server


def test_metrics_servers_only_when_asked_forwarding_metrics_alone_unlogged(tmp_path):
    assert "location = /metrics" not in render_checked(tmp_path, {}, THREE)
    paths = NginxPaths.under(tmp_path)
    paths.make_dirs()
    # 127.0.0.2 is loopback too: it stands in for the edge's private address.
    text = render_nginx_conf(validate({}, "t"), THREE, paths=paths,
                             metrics=MetricsProxy("127.0.0.2", (19180, 18090)))
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    assert check_nginx_conf(conf).ok
    for port in (19180, 18090):
        server = re.search(rf"listen 127.0.0.2:{port};(.*?)\n    \}}", text, re.S).group(1)
        # Scrapes must not count as client responses in the access log the edge exporter reads.
        assert "access_log off;" in server
        assert re.findall(r"location (.*?) \{", server) == ["= /metrics", "/"]
        assert f"proxy_pass http://127.0.0.1:{port};" in server
        assert server.count("proxy_pass") == 1


def render_tls_checked(tmp_path: Path, data: dict, *, ready: bool = True,
                       acme_webroot: str | None = None) -> str:
    """With TLS, a throwaway certificate from a local CA, and the real `nginx -t`."""
    from llmfleet.local.sandbox.certificates import issue_edge_certificate

    tls = TlsFiles(str(tmp_path / "edge.pem"), str(tmp_path / "edge-key.pem"), acme_webroot)
    if ready:
        issue_edge_certificate(tmp_path / "ca", Path(tls.certificate), Path(tls.key))
    paths = NginxPaths.under(tmp_path)
    paths.make_dirs()
    text = render_nginx_conf(validate(data, "test"), THREE, paths=paths, tls=tls,
                             tls_listen="127.0.0.1:8443")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    check = check_nginx_conf(conf)
    assert check.ok, check.output
    return text


def server_blocks(text: str) -> list[str]:
    return re.findall(r"\n    server \{\n(.*?)\n    \}", text, re.S)


def test_with_tls_the_api_is_served_on_https_with_modern_settings_only(tmp_path):
    text = render_tls_checked(tmp_path, {}, acme_webroot=str(tmp_path / "acme"))
    plain, https = server_blocks(text)[:2]
    assert re.search(r"listen 127\.0\.0\.1:8443 ssl backlog=\d+;", https)
    assert "location /v1/" in https and "location /v1/" not in plain
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in https
    ciphers = re.search(r"ssl_ciphers (\S+);", https).group(1).split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c)
                           for c in ciphers)
    assert "ssl_session_tickets off;" in https
    assert not re.search(r"listen [^;]*http2|^\s*http2 on", text, re.M)
    # Plain HTTP: the edge's liveness, Let's Encrypt's challenge, a redirect for the rest.
    assert re.search(r"listen 127\.0\.0\.1:8080 backlog=\d+;", plain)
    assert "location = /health" in plain
    assert f"root {tmp_path / 'acme'};" in plain
    assert "return 308 https://$host:8443$request_uri;" in plain


def test_before_the_certificate_exists_plain_http_still_redirects_and_no_api_is_served(
        tmp_path):
    text = render_tls_checked(tmp_path, {}, ready=False, acme_webroot=str(tmp_path / "acme"))
    assert "ssl" not in "".join(line for line in text.splitlines()
                                if not line.lstrip().startswith("#"))
    assert "location /v1/" not in text
    assert "return 308 https://" in text


def test_tls_and_its_listen_address_go_together():
    with pytest.raises(ValueError, match="go together"):
        render_nginx_conf(validate({}, "test"), THREE, tls=TlsFiles("/c", "/k"))


@pytest.mark.parametrize("euid", [0, 1000])
def test_with_private_runtime_files_a_root_master_runs_its_workers_as_their_owner(
        tmp_path, monkeypatch, euid):
    """As root, nginx would run its workers as nobody, who cannot reach a temp dir in a 0700
    state dir: every request body over 16 kB (buffered to a file) would fail."""
    monkeypatch.setattr("llmfleet.edge.nginx.os.geteuid", lambda: euid)
    paths = NginxPaths.under(tmp_path)
    text = render_nginx_conf(validate({}, "test"), THREE, paths=paths)
    assert (re.search(r"^user root;$", text, re.M) is not None) == (euid == 0)
    # The edge host's paths (Debian's, readable by nginx's own user): no user line.
    assert "\nuser " not in render_nginx_conf(validate({}, "test"), THREE)


@pytest.mark.parametrize(("cap", "expected"), [(None, 2 * WORKER_CONNECTIONS),
                                               (20_000, 20_000),
                                               (10 * WORKER_CONNECTIONS, 2 * WORKER_CONNECTIONS)])
def test_workers_ask_for_no_more_open_files_than_the_machine_allows(tmp_path, cap, expected):
    # Above the hard limit nginx's setrlimit fails, with an [alert] at every start and reload.
    paths = replace(NginxPaths.under(tmp_path), open_files_cap=cap)
    text = render_nginx_conf(validate({}, "test"), THREE, paths=paths)
    assert f"worker_rlimit_nofile {expected};" in text
