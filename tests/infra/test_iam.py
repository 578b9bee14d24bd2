"""Every inline IAM policy the program registers, through parliament (an IAM linter that knows
each action's resource types, ARN formats and condition keys), and what no role of a stack may
do: read another stack's secrets."""

from __future__ import annotations

import fnmatch
import json

import pytest
from infra_helpers import (
    ACCOUNT_ID,
    ALL_STACKS,
    POLICY_ATTACHMENT,
    REGION,
    ROLE_POLICY,
    stack_config_env,
    statements,
)
from parliament import analyze_policy_string

from llmfleet.config import from_pulumi_config_env


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_inline_policy_passes_parliament(program, mocks, stack):
    program.run(stack_config_env(stack), stack=stack)

    policies = mocks.of_type(ROLE_POLICY)
    # The GPU node's Session Manager, token, lifecycle and image-pull rights; the edge's
    # Session Manager, fleet and health rights; the monitor's Session Manager and its own; the
    # drain and scaler Lambdas'; the Redis volume's snapshots; ECR's creation of the image
    # cache's repositories.
    assert len(policies) == 13
    for policy in policies:
        findings = [f for f in analyze_policy_string(policy.inputs["policy"]).findings
                    if not _known_to_be_outdated(f)]
        assert findings == [], f"{policy.name}: {[(f.issue, f.detail) for f in findings]}"


def _known_to_be_outdated(finding) -> bool:
    # parliament's action table predates repository-scoped ecr:BatchImportUpstreamImage: AWS's
    # pull-through cache guide grants it per repository (even in repository policies). Only
    # that action's "resource must be *" is set aside; every other finding still fails.
    return finding.issue == "RESOURCE_MISMATCH" and finding.detail == [
        {"action": "ecr:BatchImportUpstreamImage", "required_format": "*"}]


# Every action that reads a parameter's value (GetParameter, GetParameters,
# GetParametersByPath, GetParameterHistory), written as a role might write it.
READS_PARAMETERS = ("ssm:GetParameter*", "ssm:*", "*")


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_no_role_reads_a_parameter_that_is_not_this_stacks(program, mocks, stack):
    program.run(stack_config_env(stack), stack=stack)
    config = from_pulumi_config_env(stack_config_env(stack), stack)
    ours = {config.gpu_node.token_parameter(stack), f"/llmfleet/{stack}/scaler-state",
            config.monitor.grafana_admin_password_parameter
            or f"/llmfleet/{stack}/grafana-admin-password",
            config.monitor.slack_webhook_parameter,
            config.monitor.pagerduty_routing_key_parameter,
            *config.edge.tls.parameters()} - {None}
    allowed = {f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{name}" for name in ours}

    # No managed policy at all: AmazonSSMManagedInstanceCore allows ssm:GetParameter* on "*".
    assert mocks.of_type(POLICY_ATTACHMENT) == []
    reading = []
    for policy in mocks.of_type(ROLE_POLICY):
        for statement in statements(policy.inputs["policy"]):
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            if statement["Effect"] == "Allow" and any(
                    fnmatch.fnmatch("ssm:GetParameter", a) or a in READS_PARAMETERS
                    or a.startswith("ssm:GetParameter") for a in actions):
                resources = statement["Resource"]
                resources = [resources] if isinstance(resources, str) else resources
                reading.append((policy.name, resources))
                assert set(resources) <= allowed, (policy.name, json.dumps(statement))
    assert reading, "no role reads any parameter: the check above saw nothing"


CERTIFICATE_EDGE = {"instance_type": "t3.small", "allowed_cidrs": ["0.0.0.0/0"],
                    "tls": {"mode": "certificate",
                            "certificate_parameter": "/llmfleet/startup-prod/tls-chain",
                            "key_parameter": "/llmfleet/startup-prod/tls-key"}}


def test_with_its_own_certificate_the_edge_reads_exactly_those_two_parameters(program, mocks):
    env = stack_config_env("startup-prod", edge=CERTIFICATE_EDGE)
    program.run(env, stack="startup-prod")
    edge = mocks.one(ROLE_POLICY, "startup-prod-edge-fleet")
    [read] = [s for s in statements(edge["policy"]) if s["Sid"] == "ReadTheCertificate"]
    assert read["Action"] == "ssm:GetParameter"
    assert read["Resource"] == [
        f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/llmfleet/startup-prod/tls-{name}"
        for name in ("chain", "key")]
    findings = analyze_policy_string(edge["policy"]).findings
    assert findings == []


def test_without_a_certificate_of_its_own_the_edge_reads_no_parameter(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")  # acme
    edge = mocks.one(ROLE_POLICY, "startup-prod-edge-fleet")
    assert not [s for s in statements(edge["policy"])
                if any(a.startswith("ssm:") for a in as_list(s["Action"]))]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value
