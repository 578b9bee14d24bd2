"""The user data the program puts in each launch template passes the real `cloud-init schema`,
and the scripts inside it parse."""

from __future__ import annotations

import py_compile
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
    stack_config,
    stack_config_env,
    user_data,
)

from llmfleet.config import from_pulumi_config_env


def _cloud_init_schema(path: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("cloud-init")
    assert binary, "cloud-init is not installed (scripts/bootstrap.sh installs it)"
    return subprocess.run([binary, "schema", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def _files(text: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_user_data_of_every_launch_template_is_valid_cloud_config(program, mocks, stack,
                                                                  tmp_path):
    program.run(stack_config_env(stack), stack=stack)

    templates = mocks.of_type(LAUNCH_TEMPLATE)
    assert {t.name for t in templates} == {f"{prefix(stack)}-gpu-template",
                                           f"{prefix(stack)}-edge-template"}
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


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_boot_scripts_parse(program, mocks, stack, tmp_path):
    program.run(stack_config_env(stack), stack=stack)

    by_name = {t.name: user_data(t.inputs) for t in mocks.of_type(LAUNCH_TEMPLATE)}
    gpu = _files(by_name[f"{prefix(stack)}-gpu-template"])
    for script in ("/usr/local/sbin/llmfleet-hf-token", "/usr/local/sbin/llmfleet-vllm"):
        path = tmp_path / Path(script).name
        path.write_text(gpu[script])
        parsed = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True,
                                check=False)
        assert parsed.returncode == 0, parsed.stderr
    boot = tmp_path / "edge_boot.py"
    boot.write_text(_files(by_name[f"{prefix(stack)}-edge-template"])[
        "/usr/local/lib/llmfleet/edge_boot.py"])
    py_compile.compile(str(boot), doraise=True)


def _vllm_command(script: str) -> list[str]:
    """The one `exec docker run ...` command line of the vLLM start script, as argv."""
    joined = script.replace("\\\n", " ")
    [line] = [line for line in joined.splitlines() if line.strip().startswith("exec ")]
    return shlex.split(line)[1:]


def test_vllm_runs_as_one_command_with_the_configured_model(program, mocks):
    program.run(stack_config_env("university-prod"), stack="university-prod")

    gpu = _files(user_data(mocks.one(LAUNCH_TEMPLATE, "university-prod-gpu-template")))
    argv = _vllm_command(gpu["/usr/local/sbin/llmfleet-vllm"])
    image = argv.index("vllm/vllm-openai:v0.11.0")
    assert argv[:image] == [
        "docker", "run", "--rm", "--name", "vllm", "--gpus", "all", "--ipc=host",
        "-p", "8000:8000", "--env-file", "/run/llmfleet/hf.env",
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
    text = cloud_init.render_gpu_node(config, stack="example", region="us-east-1")
    assert "--chat-template '{{ x }} $(id)'" in text

    broken = config.model_copy(update={
        "model": config.model.model_copy(update={"extra_args": ("a\nb",)})})
    with pytest.raises(ValueError, match="line break"):
        cloud_init.render_gpu_node(broken, stack="example", region="us-east-1")
