"""Render the GPU node's, the edge's and the monitor's cloud-init user data from their templates
in images/.

Plain functions of plain values, so tests render them without Pulumi and run the real
`cloud-init schema` on the result; the components call them inside an `apply`.
"""

from __future__ import annotations

import shlex

import jinja2
import monitor_host
from lifecycle import LAUNCH_HOOK, TERMINATE_HOOK, LifecycleTiming
from systemd_units import start_commands, unit_files

from llmfleet.config import FleetConfig
from llmfleet.config.aws import DCGM_EXPORTER_PORT, NODE_EXPORTER_PORT, TlsMode
from llmfleet.paths import images_dir
from llmfleet.services import (
    EDGE_HOST_SYSCTLS,
    GPU_NODE_OPEN_FILES,
    GPU_NODE_SYSCTLS,
    REDIS_EXPORTER_PASSWORD,
    REDIS_PASSWORD,
    GroupMembers,
    Placement,
    edge_services,
    redis_settings,
)

# The node's lifecycle script, beside its cloud-init template.
LIFECYCLE_SCRIPT = "llmfleet-lifecycle"


# In the edge bundle's root, beside pyproject.toml: the exact versions of every runtime
# dependency (infra/edge.py writes it).
BUNDLE_CONSTRAINTS = "constraints.txt"


def render_gpu_node(config: FleetConfig, *, stack: str, region: str, images: dict[str, str],
                    registry: str | None) -> str:
    """User data that starts vLLM, the DCGM exporter and the node exporter on a GPU node, and
    the node's part in its group's lifecycle hooks (`lifecycle`). `images` names the exact
    reference of each container (`NodeImages`); with `registry`, the node logs in to that ECR
    registry before each pull."""
    return _render(
        "gpu-node",
        stack=stack,
        region=region,
        images=images,
        registry=registry,
        model=config.model,
        gpu_node=config.gpu_node,
        port=config.gpu_node.vllm_port,
        dcgm_port=DCGM_EXPORTER_PORT,
        node_exporter_port=NODE_EXPORTER_PORT,
        token_parameter=config.gpu_node.token_parameter(stack),
        sysctls=GPU_NODE_SYSCTLS,
        open_files=GPU_NODE_OPEN_FILES,
        launch_hook=LAUNCH_HOOK,
        terminate_hook=TERMINATE_HOOK,
        timing=LifecycleTiming.of(config),
        lifecycle_script=(images_dir() / "gpu-node" / LIFECYCLE_SCRIPT).read_text(),
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
    redis_volume_id: str,
    boot_requirement: str,
) -> str:
    """User data that takes the Elastic IP, installs llmfleet and runs on the edge: nginx,
    Redis (persistent on its own volume `redis_volume_id`, attached at boot, with a password
    made at first boot), the gateway, the sync agent over the two GPU groups, and the
    exporters the monitor scrapes; with `edge.tls` on, the certificate from SSM before nginx
    starts (certificate) or from Let's Encrypt once the edge has its address (acme). Python
    packages come in the versions the bundle's constraints name; `boot_requirement` (boto3,
    pinned) is what fetches the bundle."""
    place = Placement.for_edge_host(
        config, GroupMembers(region=region, groups=(spot_group, on_demand_group), stack=stack))
    services = edge_services(config, place)
    return _render(
        "edge",
        stack=stack,
        redis_volume_id=redis_volume_id,
        region=region,
        place=place,
        fleet_json=config.model_dump_json(),
        redis_settings=redis_settings(place),
        sysctls=EDGE_HOST_SYSCTLS,
        redis_password_file=place.secret_source(REDIS_PASSWORD),
        redis_exporter_password_file=place.secret_source(REDIS_EXPORTER_PASSWORD),
        redis_url_for_exporter=place.redis_url.removesuffix("/0"),
        units=unit_files(services, place),
        start_commands=start_commands(services),
        eip_allocation_id=eip_allocation_id,
        bundle_bucket=bundle_bucket,
        bundle_key=bundle_key,
        boot_requirement=boot_requirement,
        constraints=BUNDLE_CONSTRAINTS,
        tls=config.edge.tls,
        acme=config.edge.tls.mode is TlsMode.ACME,
        certificate=config.edge.tls.mode is TlsMode.CERTIFICATE,
    )


def render_monitor(config: FleetConfig, *, stack: str, region: str, volume_id: str,
                   grafana_password_parameter: str, config_bucket: str, config_sha256: str
                   ) -> str:
    """User data that mounts Prometheus' volume `volume_id`, installs Prometheus, Alertmanager
    and Grafana, fetches their config files from `config_bucket` (`monitor_host.config_bundle`,
    whose SHA-256 is `config_sha256`) and their secrets from SSM, and starts them
    (`monitor_host` has what runs)."""
    return _render(
        "monitor",
        stack=stack,
        architecture=config.monitor.architecture,
        volume_id=volume_id,
        data_dir=monitor_host.DATA_DIR,
        xen_device=monitor_host.DATA_DEVICE.replace("/dev/sd", "/dev/xvd"),
        secrets_dir=monitor_host.SECRETS_DIR,
        volume_script=monitor_host.VOLUME_SCRIPT,
        install_script=monitor_host.INSTALL_SCRIPT,
        boot_script=monitor_host.BOOT_SCRIPT,
        grafana_key_fingerprint=monitor_host.GRAFANA_KEY_FINGERPRINT,
        grafana_series=monitor_host.GRAFANA_SERIES,
        config_bucket=config_bucket,
        config_key=monitor_host.CONFIG_KEY,
        fetch_configs=monitor_host.fetch_configs_command(region, config_bucket, config_sha256),
        units=monitor_host.unit_files(config, region, grafana_password_parameter),
        volume_unit=monitor_host.VOLUME_UNIT,
        start_commands=monitor_host.start_commands(),
    )


def _render(role: str, **values: object) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir() / role),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML and shell, not HTML
    )
    env.filters["sh"] = _shell_word
    # EC2's size limit is checked where the text is encoded for it (common.py).
    return env.get_template("cloud-init.yaml.j2").render(**values)


def _shell_word(value: object) -> str:
    text = str(value)
    # A line break would end the YAML block the script sits in, whatever the shell quoting.
    if "\n" in text or "\r" in text:
        raise ValueError(f"a line break cannot go into a node's boot script: {text!r}")
    return shlex.quote(text)

