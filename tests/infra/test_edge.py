"""The Edge component: a group of one behind an EIP, its narrow role, its boot, its code."""

from __future__ import annotations

import json
from importlib import metadata

import yaml
from infra_helpers import (
    ACCOUNT_ID,
    GROUP,
    LAUNCH_TEMPLATE,
    POLICY_ATTACHMENT,
    PUBLIC_IP,
    REGION,
    REPO,
    ROLE_POLICY,
    ami_today,
    import_infra,
    stack_config_env,
    statements,
    user_data,
)
from parliament import analyze_policy_string

from llmfleet.config import from_pulumi_config_env
from llmfleet.config.aws import UBUNTU_PARAMETER
from llmfleet.services import GroupMembers, Placement, Service, edge_services

EIP = "aws:ec2/eip:Eip"
BUCKET = "aws:s3/bucket:Bucket"


def test_edge_is_one_small_instance_with_imdsv2_and_an_encrypted_disk(program, mocks):
    exports = program.run(stack_config_env("university-prod"), stack="university-prod")

    group = mocks.one(GROUP, "university-prod-edge-group")
    assert (group["minSize"], group["desiredCapacity"], group["maxSize"]) == (1, 1, 1)
    assert exports["edge_group"] == mocks.ids[GROUP, "university-prod-edge-group"]
    template = mocks.one(LAUNCH_TEMPLATE, "university-prod-edge-template")
    assert template["instanceType"] == "t3.small"
    assert template["imageId"] == ami_today(UBUNTU_PARAMETER)
    assert template["metadataOptions"] == {
        "httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert template["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    assert template["networkInterfaces"][0]["securityGroups"] == [
        mocks.ids["aws:ec2/securityGroup:SecurityGroup", "university-prod-sg-edge"]]


def test_endpoint_is_the_elastic_ip_as_an_openai_base_url(program, mocks):
    # university-prod serves plain HTTP on its campus range (edge.tls.mode off).
    exports = program.run(stack_config_env("university-prod"), stack="university-prod")

    assert mocks.one(EIP, "university-prod-edge-ip")["domain"] == "vpc"
    assert exports["endpoint"] == f"http://{PUBLIC_IP}/v1"


def test_the_edge_boots_with_its_eip_bundle_and_both_gpu_groups(program, mocks):
    exports = program.run(stack_config_env("startup-prod"), stack="startup-prod")

    text = user_data(mocks.one(LAUNCH_TEMPLATE, "startup-prod-edge-template"))
    allocation = mocks.ids[EIP, "startup-prod-edge-ip"]
    bucket = mocks.ids[BUCKET, "startup-prod-edge-bundle"]
    runcmd = yaml.safe_load(text)["runcmd"]
    boot = "/usr/local/lib/llmfleet/edge_boot.py"
    assert ["/opt/llmfleet/venv/bin/python", boot, "fetch", REGION, bucket, "llmfleet.zip",
            "/opt/llmfleet/src", "/etc/llmfleet/edge.env"] in runcmd
    # The address once nginx's /health answers (the nginx record's own URL); after it only the
    # certificate's request, which needs the address (startup-prod: edge.tls.mode acme).
    [nginx] = [s for s in edge_services_of("startup-prod") if s.name == "nginx"]
    publish = (f"/opt/llmfleet/venv/bin/python -m llmfleet.edge.boot publish {REGION} "
               f"{allocation} {nginx.health} 300 || systemctl poweroff")
    assert runcmd[-2:] == [publish, ["systemctl", "start", "--no-block", "llmfleet-acme.service"]]
    assert f"--groups {exports['spot_group']} {exports['on_demand_group']}" in text
    assert f"--region {REGION}" in text


def edge_services_of(stack: str) -> list[Service]:
    config = from_pulumi_config_env(stack_config_env(stack), stack)
    return edge_services(config, Placement.for_edge_host(
        config, GroupMembers(REGION, ("spot", "ondemand"), stack)))


def test_edge_role_is_scoped_to_this_stacks_address_instances_and_bundle(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")

    documents = [r.inputs["policy"] for r in mocks.of_type(ROLE_POLICY)
                 if r.name in ("startup-prod-edge-fleet", "startup-prod-edge-health")]
    allocation = mocks.ids[EIP, "startup-prod-edge-ip"]
    ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}"
    found = {s["Sid"]: s for document in documents for s in statements(document)}
    assert set(found) == {"ReadFleetMembership", "TakeThisStacksAddress",
                          "OnlyOntoThisStacksInstances", "PublishTheFleetsLoad",
                          "SeeTheRedisVolume", "AttachTheRedisVolume",
                          "FetchTheLlmfleetBundle", "ReportAFailedBoot"}
    volume = mocks.ids["aws:ebs/volume:Volume", "startup-prod-edge-redis"]
    assert found["AttachTheRedisVolume"] == {
        "Sid": "AttachTheRedisVolume", "Effect": "Allow", "Action": "ec2:AttachVolume",
        "Resource": [f"{ec2}:volume/{volume}", f"{ec2}:instance/*"],
        "Condition": {"StringEquals": {"aws:ResourceTag/llmfleet:stack": "startup-prod"}}}
    assert found["PublishTheFleetsLoad"]["Action"] == "cloudwatch:PutMetricData"
    assert found["PublishTheFleetsLoad"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "llmfleet"}}
    # Describe* cannot be scoped by resource or tag in IAM: "*" is the only valid resource.
    assert found["ReadFleetMembership"]["Action"] == [
        "autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"]
    assert found["ReadFleetMembership"]["Resource"] == "*"
    assert found["TakeThisStacksAddress"]["Action"] == "ec2:AssociateAddress"
    assert found["TakeThisStacksAddress"]["Resource"] == f"{ec2}:elastic-ip/{allocation}"
    # AWS authorizes AssociateAddress against the instance and its network interface; the
    # launch template tags both with the stack.
    onto = found["OnlyOntoThisStacksInstances"]
    assert onto["Action"] == "ec2:AssociateAddress"
    assert onto["Resource"] == [f"{ec2}:instance/*", f"{ec2}:network-interface/*"]
    assert onto["Condition"] == {
        "StringEquals": {"aws:ResourceTag/llmfleet:stack": "startup-prod"}}
    # A failed boot marks its own instance unhealthy, in this group and no other.
    assert found["ReportAFailedBoot"] == {
        "Sid": "ReportAFailedBoot", "Effect": "Allow", "Action": "autoscaling:SetInstanceHealth",
        "Resource": mocks.outputs[GROUP, "startup-prod-edge-group"]["arn"]}
    bucket = mocks.ids[BUCKET, "startup-prod-edge-bundle"]
    assert found["FetchTheLlmfleetBundle"] == {
        "Sid": "FetchTheLlmfleetBundle", "Effect": "Allow", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/llmfleet.zip",
    }
    for statement in found.values():
        assert statement["Effect"] == "Allow"
        assert "*" not in json.dumps(statement["Action"]), "no wildcard actions"
    # parliament knows each action's resource types and condition keys.
    for document in documents:
        assert analyze_policy_string(document).findings == []
    # No managed policy: AmazonSSMManagedInstanceCore would let it read every parameter.
    assert not [r for r in mocks.of_type(POLICY_ATTACHMENT)
                if r.name.startswith("startup-prod-edge-")]


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


def test_the_edge_installs_the_dependency_versions_the_tests_ran_with(program, mocks):
    program.run(stack_config_env("startup-prod"), stack="startup-prod")
    edge = import_infra("edge")

    constraints = edge.bundle_archive(REPO).assets["constraints.txt"].text
    pinned = dict(line.split("==") for line in constraints.splitlines())
    # Every runtime dependency, and theirs, at the version installed here; no extra's.
    for direct in ("pydantic", "jinja2", "redis", "uvloop", "prometheus-client", "pyyaml",
                   "pydantic-core", "boto3", "botocore", "cryptography", "hiredis"):
        assert pinned[direct] == metadata.version(direct), direct
    for extra_only in ("pytest", "moto", "pulumi", "matplotlib", "hypothesis"):
        assert extra_only not in pinned
    # boto3 pinned before the bundle (and its constraints) is there; then the constraints.
    runcmd = yaml.safe_load(user_data(mocks.one(LAUNCH_TEMPLATE, "startup-prod-edge-template")))[
        "runcmd"]
    pip = "/opt/llmfleet/venv/bin/pip"
    assert [pip, "install", "--quiet", f"boto3=={metadata.version('boto3')}"] in runcmd
    assert [pip, "install", "--quiet", "--constraint", "/opt/llmfleet/src/constraints.txt",
            "--editable", "/opt/llmfleet/src"] in runcmd
    assert not [c for c in runcmd if c[:2] == [pip, "install"] and c[-1] == "boto3"]
