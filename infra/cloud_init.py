"""Render the GPU node's and the edge's cloud-init user data from their templates in images/.

Plain functions of plain values, so tests render them without Pulumi and run the real
`cloud-init schema` on the result; the components call them inside an `apply`.
"""

from __future__ import annotations

import shlex

import jinja2

from llmfleet.config import FleetConfig
from llmfleet.config.aws import (
    DCGM_EXPORTER_PORT,
    EDGE_GATEWAY_PORT,
    EDGE_LEASE_PORT,
    EDGE_METRICS_PORTS,
    EDGE_REDIS_PORT,
    EDGE_STATUS_PORT,
    NODE_EXPORTER_PORT,
)
from llmfleet.gateway.leases import lease_ttl_s
from llmfleet.paths import images_dir

# EC2 refuses user data above 16 KB (before base64).
USER_DATA_LIMIT = 16 * 1024


def render_gpu_node(config: FleetConfig, *, stack: str, region: str) -> str:
    """User data that starts vLLM, the DCGM exporter and the node exporter on a GPU node."""
    return _render(
        "gpu-node",
        stack=stack,
        region=region,
        model=config.model,
        gpu_node=config.gpu_node,
        port=config.gpu_node.vllm_port,
        dcgm_port=DCGM_EXPORTER_PORT,
        node_exporter_port=NODE_EXPORTER_PORT,
        token_parameter=config.gpu_node.token_parameter(stack),
    )


def render_edge(
    config: FleetConfig,
    *,
    stack: str,
    region: str,
    eip_allocation_id: str,
    bundle_bucket: str,
    bundle_key: str,
    spot_group: str,
    on_demand_group: str,
) -> str:
    """User data that takes the Elastic IP, installs llmfleet and runs on the edge: nginx,
    Redis (persistent, with a password made at first boot), the gateway, the sync agent over
    the two GPU groups, and the exporters the monitor scrapes."""
    return _render(
        "edge",
        stack=stack,
        region=region,
        fleet_json=config.model_dump_json(),
        sync_interval_s=config.edge.sync_interval_s,
        gateway_port=EDGE_GATEWAY_PORT,
        lease_port=EDGE_LEASE_PORT,
        lease_ttl_s=lease_ttl_s(config.load_balancing.read_timeout_s),
        status_port=EDGE_STATUS_PORT,
        redis_port=EDGE_REDIS_PORT,
        metrics_ports=EDGE_METRICS_PORTS,
        eip_allocation_id=eip_allocation_id,
        bundle_bucket=bundle_bucket,
        bundle_key=bundle_key,
        spot_group=spot_group,
        on_demand_group=on_demand_group,
    )


def _render(role: str, **values: object) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir() / role),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML and shell, not HTML
    )
    env.filters["sh"] = _shell_word
    text = env.get_template("cloud-init.yaml.j2").render(**values)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"{role} user data is {len(text.encode())} bytes; EC2 allows 16 KB")
    return text


def _shell_word(value: object) -> str:
    text = str(value)
    # A line break would end the YAML block the script sits in, whatever the shell quoting.
    if "\n" in text or "\r" in text:
        raise ValueError(f"a line break cannot go into a node's boot script: {text!r}")
    return shlex.quote(text)
