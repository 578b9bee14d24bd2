"""The user data the program puts in each launch template passes the real `cloud-init schema`,
and the scripts and systemd units inside it parse."""

from __future__ import annotations

import base64
import gzip
import py_compile
import random
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from infra_helpers import (
    ALL_STACKS,
    LAUNCH_TEMPLATE,
    import_infra,
    prefix,
    registry_digest,
    stack_config,
    stack_config_env,
    systemd_verify,
    user_data,
)

from llmfleet.config import from_pulumi_config_env, validate


def _cloud_init_schema(path: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("cloud-init")
    assert binary, "cloud-init is not installed (scripts/bootstrap.sh installs it)"
    return subprocess.run([binary, "schema", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


# Runs in the Python cloud-init is installed for (Debian's), not in the project's venv.
_CLOUD_INIT_READER = """
import sys
from cloudinit.user_data import UserDataProcessor
message = UserDataProcessor({}).process(sys.stdin.buffer.read())
[part] = [p for p in message.walk() if not p.is_multipart()]
assert part.get_content_type() == "text/cloud-config", part.get_content_type()
sys.stdout.write(part.get_payload(decode=True).decode())
"""


def _as_cloud_init_reads_it(raw: bytes) -> str:
    binary = shutil.which("cloud-init")
    assert binary, "cloud-init is not installed (scripts/bootstrap.sh installs it)"
    python = Path(binary).read_text(errors="replace").splitlines()[0].removeprefix("#!").strip()
    read = subprocess.run([python, "-c", _CLOUD_INIT_READER], input=raw, capture_output=True,
                          timeout=60, check=False)
    assert read.returncode == 0, read.stderr.decode()
    return read.stdout.decode()


def _files(text: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_user_data_of_every_launch_template_is_valid_cloud_config(program, mocks, stack,
                                                                  tmp_path):
    program.run(stack_config_env(stack), stack=stack)

    # The monitor's template names its image only; its user data is its instance's
    # (tests/infra/test_monitor.py checks it closely).
    templates = [t for t in mocks.of_type(LAUNCH_TEMPLATE) if "userData" in t.inputs]
    assert {t.name for t in templates} == {f"{prefix(stack)}-gpu-template",
                                           f"{prefix(stack)}-edge-template"}
    monitor = mocks.one("aws:ec2/instance:Instance", f"{prefix(stack)}-monitor-instance")
    (tmp_path / "monitor.yaml").write_text(monitor["userData"])
    checked = _cloud_init_schema(tmp_path / "monitor.yaml")
    assert checked.returncode == 0 and "Valid cloud-config" in checked.stdout, (
        checked.stdout + checked.stderr)
    model = from_pulumi_config_env(stack_config_env(stack), stack).model
    for template in templates:
        text = user_data(template.inputs)
        path = tmp_path / f"{template.name}.yaml"
        path.write_text(text)
        checked = _cloud_init_schema(path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "Valid cloud-config" in checked.stdout
        if "gpu" in template.name:
            assert f"--model {model.name}" in text
            assert f"--served-model-name {model.public_name}" in text
        else:
            _assert_the_edge_runs_keys_limits_and_metrics(text)


def _assert_the_edge_runs_keys_limits_and_metrics(text: str) -> None:
    files = _files(text)
    for service in ("llmfleet-gateway", "llmfleet-edge-exporter", "llmfleet-sync"):
        assert f"/etc/systemd/system/{service}.service" in files
    assert "appendonly yes" in files["/etc/redis/llmfleet.conf"].splitlines()
    assert ("printf 'requirepass %s\\n' \"$password\" > /etc/redis/llmfleet-auth.conf"
            in files["/usr/local/sbin/llmfleet-redis-auth"])
    # The only requirepass is the script's format string: no password is in the user data.
    assert re.findall(r"requirepass \S+", text) == ["requirepass %s\\n'"]


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_boot_scripts_parse(program, mocks, stack, tmp_path):
    program.run(stack_config_env(stack), stack=stack)

    by_name = {t.name: user_data(t.inputs) for t in mocks.of_type(LAUNCH_TEMPLATE)
               if "userData" in t.inputs}
    gpu = _files(by_name[f"{prefix(stack)}-gpu-template"])
    edge = _files(by_name[f"{prefix(stack)}-edge-template"])
    for files, script in ((gpu, "/usr/local/sbin/llmfleet-hf-token"),
                          (gpu, "/usr/local/sbin/llmfleet-vllm"),
                          (edge, "/usr/local/sbin/llmfleet-redis-auth")):
        path = tmp_path / Path(script).name
        path.write_text(files[script])
        parsed = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True,
                                check=False)
        assert parsed.returncode == 0, parsed.stderr
    boot = tmp_path / "edge_boot.py"
    boot.write_text(edge["/usr/local/lib/llmfleet/edge_boot.py"])
    py_compile.compile(str(boot), doraise=True)


# What the edge's units and drop-ins run, and the packaged units the drop-ins change; stand-ins
# for both, so systemd-analyze can load them away from an edge.
EDGE_EXECUTABLES = ("/opt/llmfleet/venv/bin/python", "/usr/bin/curl", "/usr/sbin/nginx",
                    "/usr/bin/redis-server", "/usr/bin/prometheus-nginx-exporter",
                    "/usr/bin/prometheus-redis-exporter", "/usr/bin/certbot")
PACKAGED_UNITS = {"nginx.service": "/usr/sbin/nginx",
                  "redis-server.service": "/usr/bin/redis-server",
                  "prometheus-nginx-exporter.service": "/usr/bin/prometheus-nginx-exporter",
                  "prometheus-redis-exporter.service": "/usr/bin/prometheus-redis-exporter"}


def test_edge_units_and_drop_ins_pass_systemd_analyze_verify(program, mocks, tmp_path):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")
    edge = _files(user_data(mocks.one(LAUNCH_TEMPLATE, "startup-prod-edge-template")))

    units, verified = systemd_verify(edge, PACKAGED_UNITS, EDGE_EXECUTABLES, tmp_path / "root")

    # Every packaged unit has a drop-in: Redis's requires its volume's mount. startup-prod's
    # edge gets its certificate from Let's Encrypt (edge.tls.mode acme).
    assert units == {"llmfleet-gateway.service", "llmfleet-edge-exporter.service",
                     "llmfleet-sync.service", "llmfleet-acme.service", *PACKAGED_UNITS}
    # Unknown keys and bad values are only warnings to systemd; here they fail too.
    assert verified.returncode == 0 and not (verified.stdout + verified.stderr).strip(), (
        verified.stdout + verified.stderr)


def _vllm_command(script: str) -> list[str]:
    """The one `exec docker run ...` command line of the vLLM start script, as argv."""
    joined = script.replace("\\\n", " ")
    [line] = [line for line in joined.splitlines() if line.strip().startswith("exec ")]
    return shlex.split(line)[1:]


def test_vllm_runs_as_one_command_with_the_configured_model(program, mocks):
    program.run(stack_config_env("university-prod"), stack="university-prod")

    gpu = _files(user_data(mocks.one(LAUNCH_TEMPLATE, "university-prod-gpu-template")))
    argv = _vllm_command(gpu["/usr/local/sbin/llmfleet-vllm"])
    # Pinned at `pulumi up` to the digest the tag named then (Docker Hub: no cache without
    # credentials, so straight from the registry).
    image = argv.index("docker.io/vllm/vllm-openai@"
                       + registry_digest("docker.io/vllm/vllm-openai:v0.11.0"))
    assert argv[:image] == [
        "docker", "run", "--rm", "--name", "vllm", "--gpus", "all", "--ipc=host",
        "-p", "8000:8000", "--ulimit", "nofile=65536:65536",
        "--sysctl", "net.core.somaxconn=8192", "--sysctl", "net.ipv4.tcp_max_syn_backlog=8192",
        "--env-file", "/run/llmfleet/hf.env",
        "-v", "/opt/llmfleet/hf-cache:/root/.cache/huggingface"]
    assert argv[image + 1:] == [
        "--model", "Qwen/Qwen2.5-1.5B-Instruct", "--served-model-name", "course-assistant",
        "--max-model-len", "4096", "--host", "0.0.0.0", "--port", "8000", "--dtype", "half"]


def test_the_edge_carries_the_stacks_config_for_the_sync_agent(program, mocks):
    program.run(stack_config_env("university-prod"), stack="university-prod")

    text = user_data(mocks.one(LAUNCH_TEMPLATE, "university-prod-edge-template"))
    carried = _files(text)["/etc/llmfleet/fleet.json"]
    config = from_pulumi_config_env(stack_config_env("university-prod"), "university-prod")
    assert carried == config.model_dump_json()


def test_arguments_are_shell_quoted_and_line_breaks_refused():
    cloud_init = import_infra("cloud_init")
    raw = stack_config("example")
    config = from_pulumi_config_env(
        stack_config_env("example", model={**raw["llmfleet:model"],
                                           "extra_args": ["--chat-template", "{{ x }} $(id)"]}),
        "example")
    images = {"vllm": "v", "dcgm_exporter": "d", "node_exporter": "n"}
    text = cloud_init.render_gpu_node(config, stack="example", region="us-east-1",
                                      images=images, registry=None)
    assert "--chat-template '{{ x }} $(id)'" in text

    broken = config.model_copy(update={
        "model": config.model.model_copy(update={"extra_args": ("a\nb",)})})
    with pytest.raises(ValueError, match="line break"):
        cloud_init.render_gpu_node(broken, stack="example", region="us-east-1",
                                   images=images, registry=None)


TLS_MODES = {
    "off": {},
    "acme": {"mode": "acme", "domain": "api.example.com", "email": "ops@example.com"},
    "certificate": {"mode": "certificate", "certificate_parameter": "/llmfleet/s/tls-chain",
                    "key_parameter": "/llmfleet/s/tls-key"},
}


@pytest.mark.parametrize("mode", TLS_MODES)
def test_the_edge_renders_what_each_tls_mode_needs_and_passes_cloud_init_schema(
        mode, tmp_path):
    render_edge = import_infra("cloud_init").render_edge
    config = validate({"edge": {"tls": TLS_MODES[mode]}}, "test")
    text = render_edge(config, stack="s", region="eu-west-1", eip_allocation_id="eipalloc-1",
                       bundle_bucket="bucket", bundle_key="llmfleet.zip", spot_group="spot",
                       on_demand_group="on-demand", redis_volume_id="vol-1",
                       boot_requirement="boto3==1.0.0")
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    checked = _cloud_init_schema(path)
    assert checked.returncode == 0 and "Valid cloud-config" in checked.stdout, (
        checked.stdout + checked.stderr)
    data = yaml.safe_load(text)
    commands = [c if isinstance(c, str) else " ".join(c) for c in data["runcmd"]]
    sync = next(f["content"] for f in data["write_files"]
                if f["path"] == "/etc/systemd/system/llmfleet-sync.service")
    start_sync = next(i for i, c in enumerate(commands) if "llmfleet-sync" in c)
    acme_unit = "/etc/systemd/system/llmfleet-acme.service"
    if mode == "off":
        assert "--tls-listen" not in sync
        assert acme_unit not in _files(text) and "certbot" not in data["packages"]
        assert not any("tls-files" in c for c in commands)
    elif mode == "acme":
        assert "certbot" in data["packages"]
        unit = _files(text)[acme_unit]
        assert "--webroot-path /var/lib/llmfleet/acme --domain api.example.com" in unit
        assert "--email ops@example.com" in unit and "Restart=on-failure" in unit
        assert '--deploy-hook "systemctl reload nginx"' in unit
        assert "--tls-certificate /etc/letsencrypt/live/api.example.com/fullchain.pem" in sync
        assert "--acme-webroot /var/lib/llmfleet/acme" in sync
        # After the Elastic IP (its DNS name points there), never before.
        publish = next(i for i, c in enumerate(commands) if "edge.boot publish" in c)
        assert commands.index("systemctl start --no-block llmfleet-acme.service") > publish
    else:
        [fetch] = [i for i, c in enumerate(commands) if "edge.boot tls-files" in c]
        assert fetch < start_sync
        assert commands[fetch].startswith(
            "/opt/llmfleet/venv/bin/python -m llmfleet.edge.boot tls-files eu-west-1 "
            "/llmfleet/s/tls-chain /llmfleet/s/tls-key /etc/llmfleet/tls/fullchain.pem "
            "/etc/llmfleet/tls/privkey.pem || systemctl poweroff")
        assert "--tls-key /etc/llmfleet/tls/privkey.pem" in sync


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_user_data_is_compressed_within_ec2s_limit_and_the_same_for_the_same_config(
        program, mocks, stack):
    program.run(stack_config_env(stack), stack=stack)
    first = {t.name: t.inputs["userData"] for t in mocks.of_type(LAUNCH_TEMPLATE)
             if "userData" in t.inputs}
    assert first, "no launch template carries user data"
    for name, encoded in first.items():
        raw = base64.b64decode(encoded)
        # gzip, which cloud-init unpacks; EC2 counts the bytes before base64.
        assert raw[:2] == b"\x1f\x8b", name
        assert len(raw) <= 16 * 1024, (name, len(raw))

        # cloud-init's own reader (the distribution's, as on the instance) unpacks it to the
        # cloud-config that was rendered.
        assert _as_cloud_init_reads_it(raw) == gzip.decompress(raw).decode(), name

    # Rendered again from the same config: byte for byte the same, so no template changes.
    name, encoded = next(iter(first.items()))
    text = user_data(mocks.one(LAUNCH_TEMPLATE, name))
    assert import_infra("common").launch_user_data(text) == encoded


def test_user_data_beyond_ec2s_limit_stops_the_run_with_the_size():
    common = import_infra("common")
    noise = base64.b64encode(random.Random(0).randbytes(20_000)).decode()  # barely compresses
    with pytest.raises(Exception, match=r"user data of \d+ bytes, gzip-compressed: EC2 takes"):
        common.launch_user_data(noise)
