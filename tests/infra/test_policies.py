"""The policy checks AWS enforces but mocks do not: each with a passing and a violating input,
over every stack's mocked program, and through the policy pack that hands them to Pulumi."""

from __future__ import annotations

import copy
import re
import runpy
from typing import Any

import pytest
from infra_helpers import (
    ALL_STACKS,
    GROUP,
    INGRESS,
    LAUNCH_TEMPLATE,
    REPO,
    import_infra,
    stack_config_env,
)

from llmfleet.config import from_pulumi_config_env

GPU_TAGS = [{"key": "llmfleet:role", "value": "gpu-node", "propagateAtLaunch": True}]
SPOT_GROUP: dict[str, Any] = {
    "minSize": 0, "desiredCapacity": 1, "maxSize": 4,
    "healthCheckGracePeriod": 600, "defaultInstanceWarmup": 600,
    "tags": GPU_TAGS,
    "mixedInstancesPolicy": {
        "instancesDistribution": {"onDemandBaseCapacity": 0,
                                  "onDemandPercentageAboveBaseCapacity": 0},
        "launchTemplate": {"overrides": [{"instanceType": "g4dn.xlarge", "weightedCapacity": "1"},
                                         {"instanceType": "g5.xlarge", "weightedCapacity": "2"}]},
    },
}
ON_DEMAND_GROUP: dict[str, Any] = {
    "minSize": 1, "desiredCapacity": 1, "maxSize": 2,
    "healthCheckGracePeriod": 600, "defaultInstanceWarmup": 600, "tags": GPU_TAGS,
    "launchTemplate": {"id": "lt-1", "version": "1"},
    "warmPool": {"poolState": "Stopped", "minSize": 1},
}


def changed(inputs: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `inputs` with the dotted `path` set to `value` (None deletes it)."""
    copied = copy.deepcopy(inputs)
    *parents, last = path.split(".")
    node = copied
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return copied


def _check(name: str) -> Any:
    policies = import_infra("policies")
    if name == "grace_covers_cold_start":
        return lambda typ, inputs: policies.grace_covers_cold_start(typ, inputs, cold_start_s=600)
    return getattr(policies, name)


CASES = [
    ("no_warm_pool_on_mixed_instances", GROUP, ON_DEMAND_GROUP,
     changed(SPOT_GROUP, "warmPool", {"poolState": "Stopped"}), "warm pool"),
    ("sizes_ordered", GROUP, SPOT_GROUP, changed(SPOT_GROUP, "desiredCapacity", 5),
     "0 <= 5 <= 4"),
    ("sizes_ordered", GROUP, ON_DEMAND_GROUP, changed(ON_DEMAND_GROUP, "minSize", 2),
     "2 <= 1 <= 2"),
    ("grace_covers_cold_start", GROUP, SPOT_GROUP,
     changed(SPOT_GROUP, "healthCheckGracePeriod", 300), "healthCheckGracePeriod is 300 s"),
    ("grace_covers_cold_start", GROUP, ON_DEMAND_GROUP,
     changed(ON_DEMAND_GROUP, "defaultInstanceWarmup", None), "defaultInstanceWarmup is 0 s"),
    ("fleet_types_have_gpus", GROUP, SPOT_GROUP,
     changed(SPOT_GROUP, "mixedInstancesPolicy.launchTemplate.overrides.1.instanceType",
             "p3.2xlarge"), "p3.2xlarge has no supported GPU"),
    ("fleet_types_have_gpus", LAUNCH_TEMPLATE,
     {"instanceType": "g4dn.xlarge", "tags": {"llmfleet:role": "gpu-node"}},
     {"instanceType": "t3.small", "tags": {"llmfleet:role": "gpu-node"}},
     "t3.small has no supported GPU"),
    ("weights_positive", GROUP, SPOT_GROUP,
     changed(SPOT_GROUP, "mixedInstancesPolicy.launchTemplate.overrides.0.weightedCapacity", "0"),
     "weight '0'"),
    ("spot_share_explicit", GROUP, SPOT_GROUP,
     changed(SPOT_GROUP, "mixedInstancesPolicy.instancesDistribution."
                         "onDemandPercentageAboveBaseCapacity", None),
     "onDemandPercentageAboveBaseCapacity is not set"),
]


@pytest.mark.parametrize(("check", "typ", "passing", "violating", "message"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_check_passes_good_inputs_and_names_the_violation(check, typ, passing, violating,
                                                               message):
    assert _check(check)(typ, passing) == []
    found = _check(check)(typ, violating)
    assert len(found) == 1 and message in found[0], found


def test_checks_leave_other_roles_and_types_alone():
    policies = import_infra("policies")
    edge = changed(ON_DEMAND_GROUP, "tags", [{"key": "llmfleet:role", "value": "edge"}])
    # The edge group's grace need not cover a GPU cold start; a bucket is nobody's business.
    assert policies.violations(GROUP, changed(edge, "healthCheckGracePeriod", 300),
                               cold_start_s=600) == []
    assert policies.violations("aws:s3/bucket:Bucket", {"tags": {}}, cold_start_s=600) == []


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_the_mocked_program_keeps_every_policy(program, mocks, stack):
    program.run(stack_config_env(stack), stack=stack)

    policies = import_infra("policies")
    cold_start_s = from_pulumi_config_env(stack_config_env(stack), stack).gpu_node.cold_start_s
    checked = [r for r in mocks.registered if r.type in (GROUP, LAUNCH_TEMPLATE)]
    assert len(checked) == 6  # three groups; the GPU, edge and monitor templates
    for resource in checked:
        assert policies.violations(resource.type, resource.inputs,
                                   cold_start_s=cold_start_s) == [], resource.name


def test_a_shorter_grace_in_the_program_would_be_caught(program, mocks):
    # The same run, checked against a longer cold start than the stack's: the GPU groups'
    # grace no longer covers it, so the check does look at what the program registered.
    program.run(stack_config_env("example"), stack="example")

    policies = import_infra("policies")
    found = [v for r in mocks.of_type(GROUP)
             for v in policies.violations(r.type, r.inputs, cold_start_s=601)]
    assert len(found) == 4  # grace and warm-up, on both GPU groups; not the edge's


class _Args:
    """What the policy engine hands a resource validation."""

    def __init__(self, resource_type: str, props: dict[str, Any], *, stack: str = "example",
                 name: str = "resource"):
        self.resource_type, self.props, self.name = resource_type, props, name
        self.urn = f"urn:pulumi:{stack}::llmfleet::{resource_type}::{name}"

    def get_config(self) -> dict[str, Any]:
        return {}


def _pack() -> dict[str, Any]:
    return runpy.run_path(str(REPO / "policy"), run_name="policy_pack")  # no server started


def _pack_violations(pack: dict[str, Any], resource_type: str, props: dict[str, Any],
                     stack: str) -> list[str]:
    reported: list[str] = []
    for policy in pack["POLICIES"]:
        policy.validate(_Args(resource_type, props, stack=stack),
                        lambda message, urn=None: reported.append(message))
    return reported


def test_the_policy_pack_runs_each_check_as_a_mandatory_policy():
    pack = _pack()
    policies = import_infra("policies")
    by_name = {p.name: p for p in pack["POLICIES"]}
    assert set(by_name) == {c.__name__.replace("_", "-") for c in policies.CHECKS} | {
        "grace-covers-cold-start", "plain-http-from-anywhere"}
    # Every check refuses, but the one for a choice the stack made explicitly: it warns.
    assert {p.name for p in pack["POLICIES"] if p.enforcement_level.value != "mandatory"} == {
        "plain-http-from-anywhere"}
    assert by_name["plain-http-from-anywhere"].enforcement_level.value == "advisory"
    # Nothing to configure: `pulumi up --policy-pack policy` is the whole command.
    assert all(p.config_schema is None for p in pack["POLICIES"])

    bad = changed(SPOT_GROUP, "warmPool", {"poolState": "Stopped"})
    found = _pack_violations(pack, GROUP, bad, "example")
    assert len(found) == 1 and "warm pool" in found[0]


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_the_policy_pack_passes_every_shipped_stack(program, mocks, stack):
    program.run(stack_config_env(stack), stack=stack)
    pack = _pack()

    checked = [r for r in mocks.registered if r.type.startswith("aws:")]
    assert len(checked) > 30
    for resource in checked:
        assert _pack_violations(pack, resource.type, resource.inputs, stack) == [], resource.name


def test_the_cold_start_policy_holds_each_group_to_its_own_stacks_cold_start(program, mocks):
    # university-prod waits 480 s; startup-prod's file says 900 s. The same groups pass as
    # university-prod's and fail as startup-prod's: the pack reads each stack's own value.
    program.run(stack_config_env("university-prod"), stack="university-prod")
    pack = _pack()

    spot = mocks.one(GROUP, "university-prod-gpu-spot")
    assert _pack_violations(pack, GROUP, spot, "university-prod") == []
    assert _pack_violations(pack, GROUP, spot, "startup-prod") == [
        "healthCheckGracePeriod is 480 s, shorter than the 900 s cold start",
        "defaultInstanceWarmup is 480 s, shorter than the 900 s cold start",
    ]


def test_a_stack_without_a_config_file_is_refused_with_the_reason():
    found = _pack_violations(_pack(), GROUP, SPOT_GROUP, "no-such-stack")
    assert len(found) == 1
    assert "cannot read stack 'no-such-stack'" in found[0]
    assert "Pulumi.no-such-stack.yaml" in found[0]


def test_the_policy_packs_files_name_only_files_that_exist():
    text = (REPO / "policy" / "PulumiPolicy.yaml").read_text()
    named = re.findall(r"(?:policy|stacks)/[\w./<>-]+", text)
    assert named
    for path in named:
        if "<" not in path:
            assert (REPO / path).exists(), path


PLAIN_HTTP_EDGE = {"instance_type": "t3.small", "allowed_cidrs": ["0.0.0.0/0"],
                   "tls": {"mode": "off", "plain_http_from_anywhere": True}}


def test_plain_http_open_to_the_world_is_warned_about_on_every_preview(program, mocks,
                                                                       tmp_path):
    env = stack_config_env("university-prod", edge=PLAIN_HTTP_EDGE)
    program.run(env, stack="university-prod")
    pack = _pack()
    # The pack reads the stack's own file: here, the shipped file with the override.
    shipped = pack["stack_config"]
    overridden = from_pulumi_config_env(env, "university-prod")
    pack["stack_config"] = lambda stack: overridden

    http = [r for r in mocks.of_type(INGRESS) if r.inputs.get("fromPort") == 80
            and r.inputs.get("cidrIpv4") == "0.0.0.0/0"]
    assert len(http) == 1
    found = _pack_violations(pack, INGRESS, http[0].inputs, "university-prod")
    assert found == ["port 80 is open to 0.0.0.0/0 with edge.tls.mode off: API keys cross the "
                     "internet in clear text; set edge.tls.mode to acme or certificate"]
    # The shipped university stack (plain HTTP, campus range only) and every HTTPS port pass.
    pack["stack_config"] = shipped
    program_inputs = [r.inputs for r in mocks.of_type(INGRESS) if r.inputs.get("fromPort") == 443]
    assert all(_pack_violations(pack, INGRESS, i, "university-prod") == []
               for i in program_inputs)
