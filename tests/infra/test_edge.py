"""The Edge component: a group of one behind an EIP, its narrow role, its boot, its code."""

from __future__ import annotations

import json

from infra_helpers import (
    ACCOUNT_ID,
    GROUP,
    LAUNCH_TEMPLATE,
    POLICY_ATTACHMENT,
    PUBLIC_IP,
    REGION,
    REPO,
    ROLE_POLICY,
    import_infra,
    stack_config_env,
    statements,
    user_data,
)

from llmfleet.config.aws import UBUNTU_PARAMETER

EIP = "aws:ec2/eip:Eip"
BUCKET = "aws:s3/bucket:Bucket"


def test_edge_is_one_small_instance_with_imdsv2_and_an_encrypted_disk(program, mocks):
    exports = program.run(stack_config_env("university-prod"), stack="university-prod")

    group = mocks.one(GROUP, "university-prod-edge-group")
    assert (group["minSize"], group["desiredCapacity"], group["maxSize"]) == (1, 1, 1)
    assert exports["edge_group"] == mocks.ids[GROUP, "university-prod-edge-group"]
    template = mocks.one(LAUNCH_TEMPLATE, "university-prod-edge-template")
    assert template["instanceType"] == "t3.small"
    assert template["imageId"] == f"resolve:ssm:{UBUNTU_PARAMETER}"
    assert template["metadataOptions"] == {
        "httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert template["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    assert template["networkInterfaces"][0]["securityGroups"] == [
        mocks.ids["aws:ec2/securityGroup:SecurityGroup", "university-prod-sg-edge"]]


def test_endpoint_is_the_elastic_ip_as_an_openai_base_url(program, mocks):
    exports = program.run(stack_config_env("startup-prod"), stack="startup-prod")

    assert mocks.one(EIP, "startup-prod-edge-ip")["domain"] == "vpc"
    assert exports["endpoint"] == f"http://{PUBLIC_IP}/v1"


def test_the_edge_boots_with_its_eip_bundle_and_both_gpu_groups(program, mocks):
    exports = program.run(stack_config_env("startup-prod"), stack="startup-prod")

    text = user_data(mocks.one(LAUNCH_TEMPLATE, "startup-prod-edge-template"))
    allocation = mocks.ids[EIP, "startup-prod-edge-ip"]
    bucket = mocks.ids[BUCKET, "startup-prod-edge-bundle"]
    assert f'"{REGION}", "{allocation}", "{bucket}", "llmfleet.zip"' in text
    assert f"--groups {exports['spot_group']} {exports['on_demand_group']}" in text
    assert f"--region {REGION}" in text


def test_edge_role_is_scoped_to_this_stacks_address_instances_and_bundle(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    [policy] = [r.inputs for r in mocks.of_type(ROLE_POLICY) if r.name == "startup-prod-edge-fleet"]
    allocation = mocks.ids[EIP, "startup-prod-edge-ip"]
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}"
    found = {s["Sid"]: s for s in statements(policy["policy"])}
    assert set(found) == {"ReadFleetMembership", "TakeThisStacksAddress",
                          "OnlyOntoThisStacksInstances", "FetchTheLlmfleetBundle"}
    # Describe* cannot be scoped by resource or tag in IAM: "*" is the only valid resource.
    assert found["ReadFleetMembership"]["Action"] == [
        "autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"]
    assert found["ReadFleetMembership"]["Resource"] == "*"
    assert found["TakeThisStacksAddress"]["Action"] == "ec2:AssociateAddress"
    assert found["TakeThisStacksAddress"]["Resource"] == f"{ec2}:elastic-ip/{allocation}"
    onto = found["OnlyOntoThisStacksInstances"]
    assert (onto["Action"], onto["Resource"]) == ("ec2:AssociateAddress", f"{ec2}:instance/*")
    assert onto["Condition"] == {
        "StringEquals": {"aws:ResourceTag/llmfleet:stack": "startup-prod"}}
    bucket = mocks.ids[BUCKET, "startup-prod-edge-bundle"]
    assert found["FetchTheLlmfleetBundle"] == {
        "Sid": "FetchTheLlmfleetBundle", "Effect": "Allow", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/llmfleet.zip",
    }
    for statement in found.values():
        assert statement["Effect"] == "Allow"
        assert "*" not in json.dumps(statement["Action"]), "no wildcard actions"
    attached = [r.inputs["policyArn"] for r in mocks.of_type(POLICY_ATTACHMENT)
                if r.name.startswith("startup-prod-edge-")]
    assert attached == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]


def test_the_bundle_is_private_and_holds_what_pip_install_needs(program, mocks):
    program.run(stack_config_env("example"), stack="example")

    block = mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                      "acme-prod-edge-bundle")
    assert all(block[key] for key in ("blockPublicAcls", "blockPublicPolicy",
                                      "ignorePublicAcls", "restrictPublicBuckets"))
    archive = import_infra("edge").bundle_archive(REPO)
    names = set(archive.assets)
    assert {"pyproject.toml", "README.md", "src/llmfleet/edge/sync.py",
            "images/edge/nginx.conf.j2", "images/edge/cloud-init.yaml.j2"} <= names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
