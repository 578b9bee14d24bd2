"""What GPU nodes run and every machine boots: containers pinned by digest and pulled through
the stack's ECR cache, AMIs pinned per region, and instance refresh when either changes."""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from infra_helpers import (
    ACCOUNT_ID,
    GROUP,
    LAUNCH_TEMPLATE,
    REGION,
    ROLE_POLICY,
    ami_today,
    registry_digest,
    stack_config,
    stack_config_env,
    statements,
    user_data,
)

from llmfleet.config.aws import DLAMI_PARAMETER

RULE = "aws:ecr/pullThroughCacheRule:PullThroughCacheRule"
TEMPLATE = "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
ECR = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com"
DOCKER_HUB_SECRET = (f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:"
                     "ecr-pullthroughcache/docker-hub-AbCdEf")


def node(mocks) -> dict:
    return yaml.safe_load(user_data(mocks.one(LAUNCH_TEMPLATE, "acme-prod-gpu-template")))


def files(data: dict) -> dict[str, str]:
    return {f["path"]: f["content"] for f in data["write_files"]}


def images_env(**images) -> dict[str, str]:
    return stack_config_env("example", images={**stack_config("example")["llmfleet:images"],
                                               **images})


def test_every_container_is_pinned_by_digest_and_quay_comes_through_the_stacks_cache(
        program, mocks):
    program.run(stack_config_env("example"), stack="example")

    written = files(node(mocks))
    vllm = written["/usr/local/sbin/llmfleet-vllm"]
    units = {path: text for path, text in written.items() if path.endswith(".service")}
    # Docker Hub needs credentials for ECR's cache, and nvcr.io has none: from the registry,
    # by the digest the tag named at `pulumi up`.
    assert ("docker.io/vllm/vllm-openai@"
            + registry_digest("docker.io/vllm/vllm-openai:v0.11.0")) in vllm
    dcgm = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"
    assert (dcgm.split(":")[0] + "@" + registry_digest(dcgm)) in units[
        "/etc/systemd/system/llmfleet-dcgm-exporter.service"]
    exporter = units["/etc/systemd/system/llmfleet-node-exporter.service"]
    assert (f"{ECR}/example/quay/prometheus/node-exporter@"
            + registry_digest("quay.io/prometheus/node-exporter:v1.8.2")) in exporter
    # Each pull logs in to the stack's registry first (a token lasts 12 hours).
    login = written["/usr/local/sbin/llmfleet-registry-login"]
    assert f"--password-stdin {ECR}" in login and f"--region {REGION}" in login
    for unit in units.values():
        if "docker run" in unit:
            assert "ExecStartPre=/usr/local/sbin/llmfleet-registry-login" in unit
    # Looked up once each, by tag, at `pulumi up`.
    looked_up = sorted(a["name"] for t, a in mocks.call_args
                       if t == "docker:index/getRegistryImage:getRegistryImage")
    assert looked_up == sorted(["docker.io/vllm/vllm-openai:v0.11.0", dcgm,
                                "quay.io/prometheus/node-exporter:v1.8.2"])


def test_the_cache_is_the_stacks_own_and_tags_what_it_creates(program, mocks):
    exports = program.run(stack_config_env("example"), stack="example")

    [rule] = mocks.of_type(RULE)
    assert rule.inputs == {"ecrRepositoryPrefix": "example/quay",
                           "upstreamRegistryUrl": "quay.io"}
    [template] = mocks.of_type(TEMPLATE)
    assert template.inputs["prefix"] == "example/quay"
    assert template.inputs["appliedFors"] == ["PULL_THROUGH_CACHE"]
    # Mutable: the cache follows its upstream; nodes pull by digest, which never moves.
    assert template.inputs["imageTagMutability"] == "MUTABLE"
    assert template.inputs["resourceTags"] == exports["tags"]
    [rule_] = json.loads(template.inputs["lifecyclePolicy"])["rules"]
    assert rule_["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan",
                                  "countNumber": 3}
    # The template is there before the first pull can create a repository.
    template_urn = [u for u in mocks.options[RULE, rule.name].depends_on
                    if u.endswith(f"::{template.name}")]
    assert template_urn, mocks.options[RULE, rule.name].depends_on
    # ECR tags the repositories through a role that may create and tag only under the prefix.
    role = mocks.one("aws:iam/role:Role", "acme-prod-images-ecr-role")
    assert statements(role["assumeRolePolicy"])[0]["Principal"] == {
        "Service": "ecr.amazonaws.com"}
    assert template.inputs["customRoleArn"] == mocks.outputs[
        "aws:iam/role:Role", "acme-prod-images-ecr-role"]["arn"]
    [create] = statements(mocks.one(ROLE_POLICY, "acme-prod-images-ecr-create")["policy"])
    assert create["Action"] == ["ecr:CreateRepository", "ecr:TagResource"]
    assert create["Resource"] == [f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/example/quay/*"]


def test_with_docker_hub_credentials_vllm_comes_through_the_cache_too(program, mocks):
    env = images_env(registry_credentials={"registry-1.docker.io": DOCKER_HUB_SECRET})
    program.run(env, stack="example")

    rules = {r.inputs["ecrRepositoryPrefix"]: r.inputs for r in mocks.of_type(RULE)}
    assert rules["example/docker-hub"] == {
        "ecrRepositoryPrefix": "example/docker-hub",
        "upstreamRegistryUrl": "registry-1.docker.io", "credentialArn": DOCKER_HUB_SECRET}
    assert set(rules) == {"example/docker-hub", "example/quay"}
    vllm = files(node(mocks))["/usr/local/sbin/llmfleet-vllm"]
    assert (f"{ECR}/example/docker-hub/vllm/vllm-openai@"
            + registry_digest("docker.io/vllm/vllm-openai:v0.11.0")) in vllm
    _, pull = statements(mocks.one(ROLE_POLICY, "acme-prod-gpu-images")["policy"])
    assert sorted(pull["Resource"]) == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/example/{kind}/*"
        for kind in ("docker-hub", "quay")]


def test_a_digest_in_config_is_kept_and_not_looked_up(program, mocks):
    digest = "sha256:" + "ab" * 32
    raw = stack_config("example")
    env = stack_config_env("example", gpu_node={
        **raw["llmfleet:gpu_node"],
        "dcgm_exporter_image": f"nvcr.io/nvidia/k8s/dcgm-exporter@{digest}"})
    program.run(env, stack="example")

    assert f"nvcr.io/nvidia/k8s/dcgm-exporter@{digest}" in files(node(mocks))[
        "/etc/systemd/system/llmfleet-dcgm-exporter.service"]
    assert not [a for t, a in mocks.call_args if "dcgm" in a.get("name", "")]


def test_without_the_cache_nothing_in_ecr_and_no_login(program, mocks):
    program.run(images_env(pull_through_cache=False), stack="example")

    assert mocks.of_type(RULE) == [] and mocks.of_type(TEMPLATE) == []
    assert "acme-prod-gpu-images" not in mocks.names(ROLE_POLICY)
    written = files(node(mocks))
    assert "/usr/local/sbin/llmfleet-registry-login" not in written
    assert ("quay.io/prometheus/node-exporter@"
            + registry_digest("quay.io/prometheus/node-exporter:v1.8.2")) in written[
        "/etc/systemd/system/llmfleet-node-exporter.service"]


def test_pinned_amis_are_launched_and_unpinned_ones_are_resolved_once_with_a_warning(
        program, mocks, caplog):
    pins = {REGION: {"gpu_node": "ami-0123456789abcdef0", "edge": "ami-0fedcba9876543210"},
            "eu-west-1": {"monitor": "ami-00000000000000001"}}
    with caplog.at_level(logging.WARNING):
        program.run(images_env(amis=pins), stack="example")

    images = {r.name: r.inputs["imageId"] for r in mocks.of_type(LAUNCH_TEMPLATE)}
    assert images["acme-prod-gpu-template"] == "ami-0123456789abcdef0"
    assert images["acme-prod-edge-template"] == "ami-0fedcba9876543210"
    # The monitor's pin is for another region: today's image, fixed in the template.
    monitor_parameter = "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/" \
                        "ebs-gp3/ami-id"
    assert images["acme-prod-monitor-template"] == ami_today(monitor_parameter)
    warned = [r.getMessage() for r in caplog.records if "images.amis" in r.getMessage()]
    assert len(warned) == 1 and f"images.amis.{REGION}.monitor" in warned[0]
    assert "llmfleet amis" in warned[0]
    assert not any(t.startswith("resolve:ssm:") for t in images.values())


def test_a_changed_template_refreshes_the_groups_the_fleet_without_a_dip(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    cold_start = stack_config("example")["llmfleet:gpu_node"]["cold_start_s"]
    for name in ("acme-prod-gpu-spot", "acme-prod-gpu-ondemand"):
        # New nodes ready first (up to twice the size), then the old ones drain.
        assert mocks.one(GROUP, name)["instanceRefresh"] == {
            "strategy": "Rolling",
            "preferences": {"instanceWarmup": str(cold_start), "minHealthyPercentage": 100,
                            "maxHealthyPercentage": 200, "skipMatching": True}}
    # One edge, one Redis volume: the old edge goes first.
    assert mocks.one(GROUP, "acme-prod-edge-group")["instanceRefresh"]["preferences"][
        "minHealthyPercentage"] == 0
    assert ami_today(DLAMI_PARAMETER) == mocks.one(LAUNCH_TEMPLATE, "acme-prod-gpu-template")[
        "imageId"]


@pytest.mark.parametrize("nat", [True, False])
def test_with_nat_an_s3_endpoint_spares_the_layers_the_nat_charge(program, mocks, nat):
    raw = stack_config("example")
    program.run(stack_config_env("example", network={**raw["llmfleet:network"], "nat": nat}),
                stack="example")

    endpoints = mocks.of_type(ENDPOINT)
    if not nat:
        assert endpoints == []
        return
    [endpoint] = endpoints
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"
    assert endpoint.inputs["serviceName"] == f"com.amazonaws.{REGION}.s3"
    private = mocks.ids["aws:ec2/routeTable:RouteTable", "acme-prod-net-private"]
    assert endpoint.inputs["routeTableIds"] == [private]
