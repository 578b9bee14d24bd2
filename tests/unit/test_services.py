"""The edge's services, described once: both placements come from the same records, each
program's own argument parser accepts its command line in both, and no other module repeats
a port of the edge."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from llmfleet.config import validate
from llmfleet.edge import sync
from llmfleet.gateway.__main__ import parse_args as gateway_args
from llmfleet.services import (
    EDGE_HOST_PORTS,
    MONITOR_HOST_PORTS,
    EdgePorts,
    GroupMembers,
    MembersFile,
    Placement,
    edge_services,
)

REPO = Path(__file__).resolve().parents[2]
SANDBOX_PORTS = EdgePorts(http=18080, https=0, gateway=18090, lease=18091, redis=16380,
                          status=0, edge_exporter=19180, nginx_exporter=0, redis_exporter=0)


def both(tmp_path: Path, **sections: object) -> tuple[list, list]:
    config = validate(dict(sections), "test")
    edge = Placement.for_edge_host(config, GroupMembers("eu-west-1", ("spot", "ondemand"), "lab"))
    sandbox = Placement.for_sandbox(config, tmp_path, SANDBOX_PORTS)
    return edge_services(config, edge), edge_services(config, sandbox)


def test_both_placements_run_the_same_services_in_the_same_order(tmp_path):
    edge, sandbox = both(tmp_path)
    assert [s.name for s in edge] == ["redis", "gateway", "sync", "nginx", "edge-exporter",
                                      "nginx-exporter", "redis-exporter"]
    # The sandbox runs no packaged exporters; everything else is the edge's.
    assert [s.name for s in sandbox] == [s.name for s in edge if s.packaged_unit is None
                                         or not s.replaces_command]
    for ours, theirs in zip(sandbox, edge, strict=False):
        assert (ours.name, ours.after, ours.secrets) == (theirs.name, theirs.after, theirs.secrets)
        # Same program and the same flags; only values (ports, paths) differ by place.
        assert (_flags(ours.argv) - SANDBOX_ONLY.get(ours.name, set())
                == _flags(theirs.argv) - EDGE_HOST_ONLY.get(ours.name, set()))


TLS_CERTIFICATE = {"mode": "certificate", "certificate_parameter": "/llmfleet/lab/tls-chain",
                   "key_parameter": "/llmfleet/lab/tls-key"}


def test_with_tls_both_placements_give_nginx_a_certificate_and_keep_health_on_plain_http(
        tmp_path):
    config = validate({"edge": {"tls": TLS_CERTIFICATE}}, "test")
    edge = Placement.for_edge_host(config, GroupMembers("eu-west-1", ("spot", "ondemand"), "lab"))
    sandbox = Placement.for_sandbox(config, tmp_path, EdgePorts(
        **{**vars(SANDBOX_PORTS), "https": 18443}))
    for place in (edge, sandbox):
        services = {s.name: s for s in edge_services(config, place)}
        sync_argv = services["sync"].argv
        assert sync_argv[sync_argv.index("--tls-listen") + 1] == place.tls_listen
        assert sync_argv[sync_argv.index("--tls-certificate") + 1] == place.tls.certificate
        assert sync_argv[sync_argv.index("--tls-key") + 1] == place.tls.key
        assert services["nginx"].url == f"https://127.0.0.1:{place.ports.https}"
        assert services["nginx"].health == f"http://127.0.0.1:{place.ports.http}/health"
    assert edge.tls.certificate.startswith("/etc/llmfleet/tls/")
    assert Path(sandbox.tls.key).is_relative_to(tmp_path)


def test_acme_serves_its_challenge_from_a_webroot_and_certbots_live_files(tmp_path):
    config = validate({"edge": {"tls": {"mode": "acme", "domain": "api.example.com",
                                        "email": "ops@example.com"}}}, "test")
    edge = Placement.for_edge_host(config, GroupMembers("eu-west-1", ("spot",), "lab"))
    assert edge.tls.certificate == "/etc/letsencrypt/live/api.example.com/fullchain.pem"
    sync_argv = next(s for s in edge_services(config, edge) if s.name == "sync").argv
    parsed = sync._parser().parse_args(list(sync_argv[3:]))
    assert parsed.tls_listen == str(EDGE_HOST_PORTS.https)
    assert str(parsed.acme_webroot) == edge.tls.acme_webroot


def _flags(argv: tuple[str, ...]) -> set[str]:
    return {word.split("=")[0] for word in argv if word.startswith("--")}


# The sync agent's flags that differ by place: the sandbox's backends file and nginx runtime
# folder; on an edge host the groups, the fleet's load published for the scaler Lambda,
# stub_status for the nginx exporter and the monitor's scrapes on the private address.
SANDBOX_ONLY = {"sync": {"--members-file", "--runtime-dir"}}
EDGE_HOST_ONLY = {"sync": {"--region", "--groups", "--publish-load", "--edge-exporter",
                           "--status-listen", "--metrics-address", "--metrics-ports"}}


def test_the_sandbox_lists_its_own_backends_and_keeps_every_file_in_its_state_dir(tmp_path):
    _, sandbox = both(tmp_path)
    [sync_service] = [s for s in sandbox if s.name == "sync"]
    args = sync._parser().parse_args(sync_service.argv[3:])
    assert args.members_file == tmp_path / "backends.json" and args.groups is None
    assert args.listen == "127.0.0.1:18080"
    for service in sandbox:
        for word in (w for arg in service.argv[1:] for w in arg.split()):
            if word.startswith("/") and not word.startswith((sys.prefix, "/usr/")):
                assert word.startswith(str(tmp_path)), (service.name, word)
        assert service.listen in ("-", *(f"127.0.0.1:{p}" for p in SANDBOX_PORTS.tcp().values()))


@pytest.mark.parametrize("placement", ["edge", "sandbox"])
def test_each_program_accepts_its_command_line_in_both_placements(tmp_path, placement):
    edge, sandbox = both(tmp_path, load_balancing={"read_timeout_s": 90})
    services = {s.name: s for s in (edge if placement == "edge" else sandbox)}

    gateway = gateway_args(list(services["gateway"].argv[3:]))
    assert gateway.lease_ttl == 90 + 60
    assert gateway.port == (EDGE_HOST_PORTS if placement == "edge" else SANDBOX_PORTS).gateway

    parsed = sync._parser().parse_args(list(services["sync"].argv[3:]))
    assert parsed.gateway == f"127.0.0.1:{gateway.port}"
    assert parsed.lease_port == gateway.lease_port
    assert parsed.config == Path(gateway.config)  # one config file for both


def test_without_keys_the_sandbox_runs_no_redis_or_gateway_and_nginx_asks_nobody(tmp_path):
    config = validate({"sandbox": {"auth": False, "monitoring": False}}, "test")
    place = Placement.for_sandbox(config, tmp_path, SANDBOX_PORTS)
    services = edge_services(config, place)
    assert [s.name for s in services] == ["sync", "nginx"]
    assert "--gateway" not in services[0].argv


def test_the_sandbox_reloads_its_own_nginx_and_the_edge_host_asks_systemd(tmp_path):
    config = validate({}, "test")
    sandbox = Placement.for_sandbox(config, tmp_path, SANDBOX_PORTS)
    edge = Placement.for_edge_host(config, GroupMembers("eu-west-1", ("a", "b"), "lab"))
    assert edge.reload_command == ("systemctl", "reload", "nginx")
    assert sandbox.reload_command[-2:] == ("-s", "reload")
    assert str(tmp_path / "nginx" / "nginx.conf") in sandbox.reload_command
    assert isinstance(sandbox.members, MembersFile)


# Every port of the edge and the monitor, as a literal, may appear only in llmfleet/services.py.
EDGE_PORT_LITERALS = sorted({*EDGE_HOST_PORTS.tcp().values(), EDGE_HOST_PORTS.lease,
                             *vars(MONITOR_HOST_PORTS).values()} - {80})


def test_no_module_but_services_repeats_a_port_of_the_edge():
    pattern = re.compile(r"(?<![\d.])(" + "|".join(map(str, EDGE_PORT_LITERALS)) + r")(?!\d)")
    offenders = []
    for folder in ("src", "infra", "images", "policy"):
        for path in (REPO / folder).rglob("*"):
            if not path.is_file() or path.suffix not in (".py", ".j2", ".yaml", ".yml"):
                continue
            if path.name == "services.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
