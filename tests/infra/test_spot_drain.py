"""The SpotDrain component: the drain Lambda, its code, its two EventBridge rules, its log group
and a role that can touch this stack's instances and groups only."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from infra_helpers import ACCOUNT_ID, GROUP, REGION, REPO, ROLE_POLICY, import_infra, statements
from infra_helpers import stack_config_env as config_of
from parliament import analyze_policy_string

FUNCTION = "aws:lambda/function:Function"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
PERMISSION = "aws:lambda/permission:Permission"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE = "aws:iam/role:Role"

DETAIL_TYPES = {"interruption": "EC2 Spot Instance Interruption Warning",
                "rebalance": "EC2 Instance Rebalance Recommendation"}


@pytest.fixture
def startup(program, mocks):
    """The startup-prod stack's run: its exports."""
    return program.run(config_of("startup-prod"), stack="startup-prod")


def test_the_function_runs_the_drain_handler_on_this_stacks_groups(startup, mocks):
    function = mocks.one(FUNCTION, "startup-prod-drain")

    assert function["handler"] == "llmfleet.autoscale.drain.handler"
    assert function["runtime"] == "python3.12"
    assert function["role"] == mocks.outputs[ROLE, "startup-prod-drain-role"]["arn"]
    assert function["environment"]["variables"] == {
        "LLMFLEET_STACK": "startup-prod",
        "LLMFLEET_SPOT_GROUP": startup["spot_group"],
        "LLMFLEET_ON_DEMAND_GROUP": startup["on_demand_group"],
    }
    # Its own log group, so Lambda never makes one that keeps logs forever.
    assert function["loggingConfig"] == {
        "logFormat": "Text", "logGroup": mocks.ids[LOG_GROUP, "startup-prod-drain-logs"]}
    assert mocks.one(LOG_GROUP, "startup-prod-drain-logs")["retentionInDays"] == 30
    assert startup["drain_log_group"] == mocks.ids[LOG_GROUP, "startup-prod-drain-logs"]
    # Created after its permissions: the first event may come at once.
    policy_urn = next(urn for urn in mocks.options[FUNCTION, "startup-prod-drain"].depends_on
                      if urn.endswith("::startup-prod-drain-policy"))
    assert "aws:iam/rolePolicy:RolePolicy" in policy_urn


def test_each_spot_event_has_a_rule_targeting_the_function(startup, mocks):
    function = mocks.outputs[FUNCTION, "startup-prod-drain"]

    drain_rules = [name for name in mocks.names(RULE) if "-drain-" in name]
    assert sorted(drain_rules) == ["startup-prod-drain-interruption",
                                   "startup-prod-drain-rebalance"]
    for label, detail_type in DETAIL_TYPES.items():
        name = f"startup-prod-drain-{label}"
        assert json.loads(mocks.one(RULE, name)["eventPattern"]) == {
            "source": ["aws.ec2"], "detail-type": [detail_type]}
        assert mocks.one(TARGET, name) == {"rule": mocks.ids[RULE, name],
                                           "arn": function["arn"]}
        assert mocks.one(PERMISSION, name) == {
            "action": "lambda:InvokeFunction", "function": function["name"],
            "principal": "events.amazonaws.com",
            "sourceArn": mocks.outputs[RULE, name]["arn"],
        }


def test_the_role_may_tag_this_stacks_instances_and_size_its_two_groups_only(startup, mocks):
    role = mocks.one(ROLE, "startup-prod-drain-role")
    assert statements(role["assumeRolePolicy"]) == [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]
    document = mocks.one(ROLE_POLICY, "startup-prod-drain-policy")["policy"]
    found = {s["Sid"]: s for s in statements(document)}

    assert found["ReadInstancesAndGroups"] == {
        "Sid": "ReadInstancesAndGroups", "Effect": "Allow",
        "Action": ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"],
        "Resource": "*"}
    assert found["TagThisStacksInstancesDraining"] == {
        "Sid": "TagThisStacksInstancesDraining", "Effect": "Allow", "Action": "ec2:CreateTags",
        "Resource": f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/*",
        "Condition": {
            "StringEquals": {"aws:ResourceTag/llmfleet:stack": "startup-prod"},
            "ForAllValues:StringEquals": {"aws:TagKeys": ["llmfleet:draining"]},
        }}
    groups = [mocks.outputs[GROUP, f"startup-prod-gpu-{g}"]["arn"] for g in ("spot", "ondemand")]
    assert found["ResizeThisStacksGpuGroups"] == {
        "Sid": "ResizeThisStacksGpuGroups", "Effect": "Allow",
        "Action": "autoscaling:SetDesiredCapacity", "Resource": groups}
    log_group = mocks.ids[LOG_GROUP, "startup-prod-drain-logs"]
    assert found["WriteItsLogs"]["Resource"] == (
        f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{log_group}:*")
    assert set(found) == {"ReadInstancesAndGroups", "TagThisStacksInstancesDraining",
                          "ResizeThisStacksGpuGroups", "WriteItsLogs"}
    # parliament knows each action's resource types and condition keys.
    assert analyze_policy_string(document).findings == []


def test_every_drain_resource_carries_the_stack_tags(startup, mocks):
    for typ, name in [(FUNCTION, "startup-prod-drain"), (ROLE, "startup-prod-drain-role"),
                      (LOG_GROUP, "startup-prod-drain-logs"),
                      (RULE, "startup-prod-drain-interruption"),
                      (RULE, "startup-prod-drain-rebalance")]:
        assert startup["tags"].items() <= mocks.one(typ, name)["tags"].items(), name


def test_the_code_is_the_runtime_packages_at_the_top_of_the_zip(startup, mocks):
    shipped = mocks.one(FUNCTION, "startup-prod-drain")["code"]
    names = set(import_infra("lambdas").handler_archive(REPO).assets)

    assert set(shipped.assets) == names
    assert {"llmfleet/__init__.py", "llmfleet/autoscale/drain.py",
            "llmfleet/edge/members.py"} <= names
    assert all(name.startswith("llmfleet/") for name in names)
    assert not any(name.startswith("llmfleet/local/") or "__pycache__" in name
                   for name in names)


# Lambda's Python runtime: the standard library and boto3 with what boto3 needs.
ON_LAMBDA = ("boto3", "botocore", "jmespath", "s3transfer", "urllib3", "dateutil", "six")
IMPORT_ON_LAMBDA = """
import importlib.abc, sys
allowed = set(sys.argv[2].split(","))
class NotOnLambda(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top not in allowed and top not in sys.stdlib_module_names and top != "llmfleet":
            raise ImportError(f"the Lambda runtime has no {name}")
sys.meta_path.insert(0, NotOnLambda())
sys.path.insert(0, sys.argv[1])
import importlib
handler = importlib.import_module(sys.argv[3])
assert handler.__file__.startswith(sys.argv[1]), handler.__file__
print(handler.handler.__name__)
"""


@pytest.mark.parametrize("module", ["llmfleet.autoscale.drain", "llmfleet.autoscale.scaler"])
def test_the_zip_imports_with_what_the_lambda_runtime_has(tmp_path: Path, module: str):
    """Both Lambdas (drain and scaler) run from this zip."""
    archive = import_infra("lambdas").handler_archive(REPO)
    bundle = tmp_path / "code.zip"
    with zipfile.ZipFile(bundle, "w") as zipped:
        for name, asset in archive.assets.items():
            zipped.write(asset.path, name)
    unpacked = tmp_path / "task"
    zipfile.ZipFile(bundle).extractall(unpacked)

    ran = subprocess.run(
        [sys.executable, "-c", IMPORT_ON_LAMBDA, str(unpacked), ",".join(ON_LAMBDA), module],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "handler"
