"""The GpuFleet component: the spot group, the on-demand fallback, the launch template, IAM."""

from __future__ import annotations

import pytest
from infra_helpers import (
    ACCOUNT_ID,
    GROUP,
    LAUNCH_TEMPLATE,
    POLICY_ATTACHMENT,
    REGION,
    ROLE_POLICY,
    ami_today,
    group_tag_map,
    stack_config_env,
    statements,
    user_data,
)

from llmfleet.config.aws import DLAMI_PARAMETER


def test_spot_group_spreads_over_the_weighted_types_at_the_best_spot_price(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    spot = mocks.one(GROUP, "startup-prod-gpu-spot")
    assert (spot["minSize"], spot["desiredCapacity"], spot["maxSize"]) == (0, 1, 8)
    assert spot["capacityRebalance"] is True
    policy = spot["mixedInstancesPolicy"]
    assert policy["instancesDistribution"] == {
        "onDemandBaseCapacity": 0,
        "onDemandPercentageAboveBaseCapacity": 0,
        "onDemandAllocationStrategy": "lowest-price",
        "spotAllocationStrategy": "price-capacity-optimized",
    }
    assert policy["launchTemplate"]["overrides"] == [
        {"instanceType": "g6.xlarge", "weightedCapacity": "1"},
        {"instanceType": "g5.xlarge", "weightedCapacity": "2"},
    ]
    spec = policy["launchTemplate"]["launchTemplateSpecification"]
    assert spec == {"launchTemplateId": mocks.ids[LAUNCH_TEMPLATE, "startup-prod-gpu-template"],
                    "version": "1"}
    assert "warmPool" not in spot
    assert group_tag_map(spot)["llmfleet:capacity"] == "spot"


def test_a_fleet_without_spot_buys_on_demand_in_the_same_group(program, mocks):
    fleet = {"instance_types": [{"type": "g5.xlarge"}], "spot": False}
    program.run(stack_config_env("example", fleet=fleet), stack="example")

    spot = mocks.one(GROUP, "acme-prod-gpu-spot")
    distribution = spot["mixedInstancesPolicy"]["instancesDistribution"]
    assert distribution["onDemandPercentageAboveBaseCapacity"] == 100
    assert group_tag_map(spot)["llmfleet:capacity"] == "on-demand"


def test_on_demand_fallback_is_one_type_with_a_warm_pool_reused_on_scale_in(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    fallback = mocks.one(GROUP, "startup-prod-gpu-ondemand")
    assert "mixedInstancesPolicy" not in fallback
    # One node always on (min = desired = 1).
    assert (fallback["minSize"], fallback["desiredCapacity"], fallback["maxSize"]) == (1, 1, 4)
    assert fallback["launchTemplate"] == {
        "id": mocks.ids[LAUNCH_TEMPLATE, "startup-prod-gpu-template"], "version": "1"}
    # The template's own type is the fallback's: the first of the fleet's types.
    assert mocks.one(LAUNCH_TEMPLATE, "startup-prod-gpu-template")["instanceType"] == "g6.xlarge"
    assert fallback["warmPool"] == {
        "poolState": "Stopped",
        "minSize": 1,
        "maxGroupPreparedCapacity": 2,
        "instanceReusePolicy": {"reuseOnScaleIn": True},
    }
    assert group_tag_map(fallback)["llmfleet:capacity"] == "on-demand"


def test_warm_pool_zero_means_no_warm_pool(program, mocks):
    on_demand = {"min_size": 0, "max_size": 2, "warm_pool": 0}
    program.run(stack_config_env("example", on_demand=on_demand), stack="example")

    assert "warmPool" not in mocks.one(GROUP, "acme-prod-gpu-ondemand")


@pytest.mark.parametrize(("stack", "cold_start_s"), [("university-prod", 480),
                                                     ("startup-prod", 900)])
def test_health_checks_and_warm_up_wait_out_the_cold_start(program, mocks, stack, cold_start_s):
    program.run(stack_config_env(stack), stack=stack)

    for name in (f"{stack}-gpu-spot", f"{stack}-gpu-ondemand"):
        group = mocks.one(GROUP, name)
        assert group["healthCheckType"] == "EC2"
        assert group["healthCheckGracePeriod"] == cold_start_s
        assert group["defaultInstanceWarmup"] == cold_start_s


def test_launch_template_requires_imdsv2_encrypts_the_disk_and_uses_the_dlami(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    template = mocks.one(LAUNCH_TEMPLATE, "acme-prod-gpu-template")
    # Unpinned in this stack: what the DLAMI's public parameter names at `pulumi up`.
    assert template["imageId"] == ami_today(DLAMI_PARAMETER)
    assert template["metadataOptions"] == {
        "httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert template["blockDeviceMappings"] == [{
        "deviceName": "/dev/sda1",
        "ebs": {"volumeSize": 150, "volumeType": "gp3", "encrypted": "true",
                "deleteOnTermination": "true"},
    }]
    assert "keyName" not in template
    profile_arn = f"arn:aws:iam::{ACCOUNT_ID}:instanceProfile/acme-prod-gpu-profile-"
    assert template["iamInstanceProfile"]["arn"].startswith(profile_arn)
    assert template["networkInterfaces"][0]["securityGroups"] == [
        mocks.ids["aws:ec2/securityGroup:SecurityGroup", "acme-prod-sg-gpu"]]


def test_user_data_starts_the_configured_model_and_reads_the_token_from_ssm(program, mocks):
    program.run(stack_config_env("university-prod"), stack="university-prod")

    text = user_data(mocks.one(LAUNCH_TEMPLATE, "university-prod-gpu-template"))
    assert text.startswith("#cloud-config\n")
    assert "--model Qwen/Qwen2.5-1.5B-Instruct" in text
    assert "--served-model-name course-assistant" in text
    assert "--max-model-len 4096" in text
    assert "--dtype half" in text
    assert "-p 8000:8000" in text and "--gpus all" in text
    assert f"--region {REGION}" in text
    assert "--name /llmfleet/university-prod/hf-token" in text


def test_node_role_may_use_ssm_read_its_token_and_join_and_leave_its_groups_only(program,
                                                                                   mocks):
    program.run(stack_config_env("example", gpu_node={"hf_token_parameter": "/acme/hf"}),
                stack="example")

    role = mocks.one("aws:iam/role:Role", "acme-prod-gpu-role")
    assert statements(role["assumeRolePolicy"]) == [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]
    assert not [r for r in mocks.of_type(POLICY_ATTACHMENT)
                if r.name.startswith("acme-prod-gpu-")]
    inline = {r.name: r for r in mocks.of_type(ROLE_POLICY) if r.name.startswith("acme-prod-gpu-")}
    assert set(inline) == {"acme-prod-gpu-ssm", "acme-prod-gpu-hf-token",
                           "acme-prod-gpu-lifecycle", "acme-prod-gpu-images"}
    # Its images: a login token, and pulls from this stack's cache (node-exporter's quay.io).
    login, pull = statements(inline["acme-prod-gpu-images"].inputs["policy"])
    assert login["Action"] == "ecr:GetAuthorizationToken"
    assert pull["Resource"] == [f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/example/quay/*"]
    assert statements(inline["acme-prod-gpu-hf-token"].inputs["policy"]) == [{
        "Sid": "ReadTheHuggingFaceToken",
        "Effect": "Allow",
        "Action": "ssm:GetParameter",
        "Resource": f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/acme/hf",
    }]
    groups = [mocks.outputs[GROUP, f"acme-prod-gpu-{g}"]["arn"] for g in ("spot", "ondemand")]
    assert statements(inline["acme-prod-gpu-lifecycle"].inputs["policy"]) == [
        {"Sid": "FindItsGroup", "Effect": "Allow",
         "Action": "autoscaling:DescribeAutoScalingInstances", "Resource": "*"},
        {"Sid": "JoinLeaveAndReportInThisStacksGroups", "Effect": "Allow",
         "Action": ["autoscaling:CompleteLifecycleAction", "autoscaling:SetInstanceHealth"],
         "Resource": groups},
    ]


@pytest.mark.parametrize(("stack", "launch_s", "drain_s"), [
    ("university-prod", 480 + 300, 300 + 30), ("startup-prod", 900 + 300, 300 + 30)])
def test_both_groups_hold_nodes_until_vllm_serves_and_until_their_requests_end(
        program, mocks, stack, launch_s, drain_s):
    program.run(stack_config_env(stack), stack=stack)

    for group in ("spot", "ondemand"):
        hooks = {h["name"]: h for h in mocks.one(GROUP, f"{stack}-gpu-{group}")[
            "initialLifecycleHooks"]}
        assert hooks == {
            "llmfleet-launching": {
                "name": "llmfleet-launching",
                "lifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                "heartbeatTimeout": launch_s, "defaultResult": "ABANDON"},
            "llmfleet-terminating": {
                "name": "llmfleet-terminating",
                "lifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                "heartbeatTimeout": drain_s, "defaultResult": "CONTINUE"},
        }, group
    text = user_data(mocks.one(LAUNCH_TEMPLATE, f"{stack}-gpu-template"))
    # The node gives up a minute before Auto Scaling would, and docker stop waits the drain.
    assert f"LLMFLEET_READY_WITHIN_S={launch_s - 60}" in text
    assert f"LLMFLEET_DRAIN_WITHIN_S={drain_s - 30}" in text
    assert f"docker stop --time {drain_s - 30} vllm" in text


def test_user_data_names_the_token_parameter_but_holds_no_token(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    text = user_data(mocks.one(LAUNCH_TEMPLATE, "startup-prod-gpu-template"))
    # Fetched at boot into tmpfs: the only HF_TOKEN= is the line that writes it there.
    [line] = [line for line in text.splitlines() if "HF_TOKEN=" in line]
    assert line.strip() == """printf 'HF_TOKEN=%s\\n' "$token" > /run/llmfleet/hf.env"""
    assert "--with-decryption" in text


def test_pulumi_leaves_desired_capacity_to_the_scalers_and_waits_for_no_node(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    for name in ("startup-prod-gpu-spot", "startup-prod-gpu-ondemand"):
        # The engine's own (camelCase) name, so a misspelt property cannot pass unnoticed.
        assert mocks.options[GROUP, name].ignore_changes == ["desiredCapacity"], name
        # "0": `pulumi up` returns once the group exists, nodes or not.
        assert mocks.one(GROUP, name)["waitForCapacityTimeout"] == "0", name
    # The edge's size is Pulumi's alone.
    assert mocks.options[GROUP, "startup-prod-edge-group"].ignore_changes == []
    assert mocks.one(GROUP, "startup-prod-gpu-ondemand")["forceDeleteWarmPool"] is True
