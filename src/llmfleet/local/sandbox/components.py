"""The sandbox's components, each a function that starts its processes on a SandboxRun.

`up` calls them in `STARTERS` order and waits for each one's processes to be healthy before
the next starts, so a component can rely on the facts the earlier ones published.
"""

from __future__ import annotations

from collections.abc import Callable

from llmfleet.edge.nginx import (
    NginxPaths,
    Upstream,
    check_nginx_conf,
    nginx_binary,
    render_nginx_conf,
)
from llmfleet.local.sandbox.auth import gateway_hook, start_gateway, start_redis
from llmfleet.local.sandbox.backends import backend_command, backend_name
from llmfleet.local.sandbox.monitoring import start_alertmanager, start_prometheus
from llmfleet.local.sandbox.ports import LOOPBACK
from llmfleet.local.sandbox.run import SandboxError, SandboxRun


def start_backends(run: SandboxRun) -> None:
    """N model servers on base_port, base_port + 1, ... (free ports where those are taken)."""
    sandbox = run.config.sandbox
    upstreams = []
    for index in range(sandbox.backends):
        name = backend_name(index)
        port = run.port(sandbox.base_port + index)
        url = f"http://{LOOPBACK}:{port}"
        run.say(f"starting {name} ({sandbox.backend.value}) on {url}")
        run.launch(name, "backend", backend_command(run.config, index, port), url, url + "/health")
        upstreams.append({"name": name, "host": LOOPBACK, "port": port})
    run.facts["upstreams"] = upstreams


def start_edge(run: SandboxRun) -> None:
    """nginx rendered from the same template as the AWS edge, in front of the backends."""
    port = run.facts["edge_port"]
    endpoint = f"http://{LOOPBACK}:{port}"
    upstreams = [Upstream(u["name"], u["host"], u["port"]) for u in run.facts["upstreams"]]
    nginx_dir = run.state_dir / "nginx"
    paths = NginxPaths.under(nginx_dir)
    paths.make_dirs()
    # The sandbox shows which backend served each response (the load report counts them).
    lb = run.config.load_balancing.model_copy(update={"expose_upstream_header": True})
    config = run.config.model_copy(update={"load_balancing": lb})
    conf = nginx_dir / "nginx.conf"
    conf.write_text(render_nginx_conf(config, upstreams, listen=f"{LOOPBACK}:{port}",
                                      paths=paths, gateway=gateway_hook(run)))
    check = check_nginx_conf(conf)
    if not check.ok:
        raise SandboxError(f"nginx rejected the rendered config {conf}:\n{check.output}")
    run.state["nginx_conf"] = str(conf)
    run.say(f"starting nginx (edge, {lb.strategy.value}) on {endpoint}")
    run.launch("edge", "edge",
               [nginx_binary(), "-c", str(conf), "-e", paths.error_log, "-g", "daemon off;"],
               endpoint, endpoint + "/health")


# Order matters: each starter may use what the ones before it published in run.facts.
STARTERS: list[Callable[[SandboxRun], None]] = [
    start_backends, start_redis, start_gateway, start_edge, start_alertmanager, start_prometheus,
]
