"""The Pulumi program under mocks: config is validated first, then one Deployment per stack
with the network, security groups, GPU fleet and edge as its children."""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
import pytest
import yaml
from infra_helpers import (
    ALL_STACKS,
    LONGEST_STACK,
    PUBLIC_IP,
    REGION,
    STACKS,
    import_infra,
    longest_names_config_env,
    stack_config_env,
)

from llmfleet.config import FleetConfig, InstanceType

DEPLOYMENT = "llmfleet:index:Deployment"
COMPONENTS = ["llmfleet:index:Network", "llmfleet:index:SecurityGroups",
              "llmfleet:index:NodeImages", "llmfleet:index:GpuFleet", "llmfleet:index:Edge",
              "llmfleet:index:SpotDrain",
              "llmfleet:index:Scaler", "llmfleet:index:CostControls",
              "llmfleet:index:Monitor", "llmfleet:index:RedisSnapshots"]


def expected_tags(client: str, environment: str, stack: str) -> dict[str, str]:
    return {
        "llmfleet:client": client,
        "llmfleet:environment": environment,
        "llmfleet:stack": stack,
        "managed-by": "pulumi",
    }


def test_example_stack_registers_one_deployment_with_its_outputs(program, mocks):
    exports = program.run(stack_config_env("example"), stack="example")
    monitor = mocks.ids["aws:ec2/instance:Instance", "acme-prod-monitor-instance"]

    assert mocks.registered[0] == (DEPLOYMENT, "acme-prod", {})
    components = [r for r in mocks.registered if r.type.startswith("llmfleet:")]
    assert sorted(r.type for r in components[1:]) == sorted(COMPONENTS)
    assert {r.name for r in components} == {
        "acme-prod", "acme-prod-net", "acme-prod-sg", "acme-prod-images", "acme-prod-gpu",
        "acme-prod-edge",
        "acme-prod-drain", "acme-prod-scaler",
        "acme-prod-cost", "acme-prod-monitor", "acme-prod-edge-snapshots"}
    assert mocks.names("aws:autoscaling/group:Group") == [
        "acme-prod-edge-group", "acme-prod-gpu-ondemand", "acme-prod-gpu-spot"]
    assert exports == {
        "client": "acme",
        "environment": "prod",
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "strategy": "least_conn",
        "tags": expected_tags("acme", "prod", stack="example"),
        "endpoint": f"http://{PUBLIC_IP}/v1",
        "spot_group": _auto_name(mocks, "acme-prod-gpu-spot"),
        "on_demand_group": _auto_name(mocks, "acme-prod-gpu-ondemand"),
        "edge_group": _auto_name(mocks, "acme-prod-edge-group"),
        "vpc_id": mocks.ids["aws:ec2/vpc:Vpc", "acme-prod-net-vpc"],
        "drain_log_group": mocks.ids["aws:cloudwatch/logGroup:LogGroup", "acme-prod-drain-logs"],
        "scaler_log_group": mocks.ids["aws:cloudwatch/logGroup:LogGroup",
                                      "acme-prod-scaler-logs"],
        "budget_name": None,  # the example sets no budget
        "monitor_instance": monitor,
        "monitor_port_forwards": {
            service: f"aws ssm start-session --region {REGION} --target {monitor} "
                     "--document-name AWS-StartPortForwardingSession --parameters "
                     f"""'{{"portNumber":["{port}"],"localPortNumber":["{port}"]}}'"""
            for service, port in (("grafana", 3000), ("prometheus", 9090),
                                  ("alertmanager", 9093))},
        "grafana_password_command": (
            f"aws ssm get-parameter --region {REGION} --name "
            "/llmfleet/example/grafana-admin-password --with-decryption "
            "--query Parameter.Value --output text"),
    }


def _auto_name(mocks, name: str) -> str:
    """The physical name the (mocked) provider gave a group registered without one."""
    found = mocks.ids["aws:autoscaling/group:Group", name]
    assert found.startswith(name + "-")
    return found


@pytest.mark.parametrize(
    ("stack", "client", "model"),
    [
        ("university-prod", "university", "course-assistant"),
        ("startup-prod", "startup", "assistant"),
    ],
)
def test_each_client_stack_deploys_under_its_own_names(program, mocks, stack, client, model):
    exports = program.run(stack_config_env(stack), stack=stack)

    assert mocks.registered[0] == (DEPLOYMENT, stack, {})
    assert {k: exports[k] for k in ("client", "environment", "model", "strategy", "tags")} == {
        "client": client,
        "environment": "prod",
        "model": model,
        "strategy": "least_conn",
        "tags": expected_tags(client, "prod", stack=stack),
    }
    assert exports["endpoint"] == endpoint_of(stack)
    assert exports["spot_group"].startswith(f"{stack}-gpu-spot-")
    assert exports["on_demand_group"].startswith(f"{stack}-gpu-ondemand-")


def endpoint_of(stack: str) -> str:
    """startup-prod serves HTTPS under its Let's Encrypt name; the others plain HTTP."""
    if stack == "startup-prod":
        return "https://api.startup.example.com/v1"
    return f"http://{PUBLIC_IP}/v1"


@pytest.mark.parametrize("stack", [*ALL_STACKS, LONGEST_STACK])
def test_every_stack_previews_with_names_aws_accepts(program, mocks, stack):
    # The mocks refuse a generated name over AWS's limit for its type, as the provider does
    # (conftest.AUTONAMED); the longest client and environment names must fit too.
    config_env = (longest_names_config_env() if stack == LONGEST_STACK
                  else stack_config_env(stack))

    exports = program.run(config_env, stack=stack, preview=True)

    assert exports["endpoint"] == endpoint_of(stack)
    assert len(mocks.registered) > 30
    assert exports["tags"]["llmfleet:stack"] == stack
    stem = import_infra("common").name_stem(mocks.registered[0].name)
    assert all(r.name.startswith(stem) for r in mocks.registered[1:])


def test_a_long_stack_name_gives_a_short_stem_that_still_tells_stacks_apart():
    common = import_infra("common")
    assert common.name_stem("university-prod") == "university-prod"
    stem = common.name_stem(LONGEST_STACK)
    other = common.name_stem(LONGEST_STACK[:-1] + "f")
    assert len(stem) == len(other) == common.NAME_STEM_MAX
    assert stem != other and stem.startswith("c" * 25)


def test_config_from_the_cli_environment_variable_is_read(program, mocks, monkeypatch):
    # `pulumi up` passes stack config in PULUMI_CONFIG; mocks and the Automation API fill the
    # runtime's config map instead (what program.run does). The program must see both.
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(stack_config_env("university-prod")))

    exports = program.run({}, stack="university-prod")

    assert mocks.registered[0] == (DEPLOYMENT, "university-prod", {})
    assert exports["client"] == "university"


# AWS tag rules shared by the services llmfleet uses (EC2, Auto Scaling, IAM, Lambda): 1-128
# characters per key, 0-256 per value, letters, digits, spaces and _ . : / = + - @, and no
# 'aws:' prefix in any case.
AWS_TAG_TEXT = re.compile(r"^[\w .:/=+\-@]*$")


def test_tags_are_valid_aws_tags(program):
    tags = program.run(stack_config_env("example"), stack="example")["tags"]

    assert tags
    for key, value in tags.items():
        assert 1 <= len(key) <= 128 and AWS_TAG_TEXT.match(key), key
        assert len(value) <= 256 and AWS_TAG_TEXT.match(value), value
        assert not key.lower().startswith("aws:"), key
        assert not value.lower().startswith("aws:"), value


# Pydantic runs a section's cross-field check (min_size <= desired <= max_size) only when its
# fields are valid, so a CPU instance type would hide a size-order error in the same section:
# the two are separate cases.
BAD_FIELDS = {
    "llmfleet:client": "Acme Corp",
    "llmfleet:fleet": json.dumps({"instance_types": [{"type": "m5.xlarge"}], "max_size": 2}),
    "llmfleet:load_balancing": json.dumps({"strategy": "fastest"}),
    "llmfleet:gpus": "4",
}
BAD_SIZES = {
    "llmfleet:fleet": json.dumps(
        {"instance_types": [{"type": "g5.xlarge"}], "min_size": 3, "max_size": 2}
    ),
    "llmfleet:gpus": "4",
}
BAD_AWS = {
    "llmfleet:network": json.dumps({"vpc_id": "vpc-0123456789abcdef0", "nat": True,
                                    "public_subnet_ids": ["subnet-0123456789abcdef0"]}),
    "llmfleet:edge": json.dumps({"allowed_cidrs": ["10.0.0.1/8"], "instance_type": "g5.xlarge"}),
    "llmfleet:gpu_node": json.dumps({"vllm_port": 9400, "hf_token_parameter": "hf-token"}),
    "llmfleet:on_demand": json.dumps({"min_size": 3, "max_size": 2}),
    "llmfleet:prices": json.dumps({"spot": {"g5.xlarge": -1}}),
}


@pytest.mark.parametrize(
    ("config_env", "bad_keys", "problems"),
    [
        (
            BAD_FIELDS,
            {
                "llmfleet:client",
                "llmfleet:fleet.instance_types[0].type",
                "llmfleet:load_balancing.strategy",
                "llmfleet:gpus",
            },
            ["not a supported GPU instance type", "unknown key"],
        ),
        (
            BAD_SIZES,
            {"llmfleet:fleet", "llmfleet:gpus"},
            ["min_size <= desired <= max_size", "unknown key"],
        ),
        (
            BAD_AWS,
            {
                "llmfleet:network",
                "llmfleet:edge.allowed_cidrs",
                "llmfleet:edge.instance_type",
                "llmfleet:gpu_node.vllm_port",
                "llmfleet:gpu_node.hf_token_parameter",
                "llmfleet:on_demand",
                "llmfleet:prices.spot.g5.xlarge",
            },
            ["nat applies only to a VPC llmfleet creates", "host bits set", "needs no GPU",
             "belong to the exporters", "starting with '/'", "min_size <= max_size",
             "greater than or equal to 0"],
        ),
    ],
    ids=["bad-fields", "bad-sizes", "bad-aws-sections"],
)
def test_invalid_config_names_every_bad_key_and_creates_nothing(
    program, mocks, config_env, bad_keys, problems
):
    with pytest.raises(pulumi.RunError) as caught:
        program.run({"aws:region": "us-east-1", **config_env}, stack="acme-prod")

    message = str(caught.value)
    # One line per problem, "  - <key>: ...", and no traceback text around it.
    keys = {line.split(": ")[0].removeprefix("  - ") for line in message.splitlines()[1:]}
    assert keys == bad_keys
    assert "stack 'acme-prod'" in message
    for text in [*bad_keys, *problems]:
        assert text in message
    # program.run drains every pending registration before re-raising, so a resource
    # registered ahead of validation would be listed here.
    assert mocks.registered == []


def test_example_stack_lists_every_key_of_the_aws_sections():
    # The example is what users copy: a key added to the config model must appear in it.
    config = yaml.safe_load((STACKS / "Pulumi.example.yaml").read_text(encoding="utf-8"))
    ours = {
        key.removeprefix("llmfleet:"): value
        for key, value in config["config"].items()
        if key.startswith("llmfleet:")
    }
    assert set(ours) == set(FleetConfig.model_fields) - {"sandbox"}
    for section, value in ours.items():
        fields = _model_fields(section)
        if fields is not None:
            assert set(value) == fields, section
    assert set(ours["fleet"]["instance_types"][0]) == set(InstanceType.model_fields)


def _model_fields(section: str) -> set[str] | None:
    annotation: Any = FleetConfig.model_fields[section].annotation
    return set(annotation.model_fields) if hasattr(annotation, "model_fields") else None
