"""The Monitor component on its own, under the mocks: one instance with no way in but SSM, its
own encrypted data volume, IAM scoped to its parameters and its config object, the stack's
tags, the port-forward commands; and what runs on it checked by the real tools: `cloud-init
schema` on its user data, `promtool` and `amtool` on the configs as rendered for AWS,
`systemd-analyze verify` on its units, parliament on its policy, its boot script against moto.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import py_compile
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pulumi
import pytest
import yaml
from infra_helpers import (
    ACCOUNT_ID,
    ALL_STACKS,
    INGRESS,
    LAUNCH_TEMPLATE,
    LONGEST_STACK,
    POLICY_ATTACHMENT,
    REGION,
    REPO,
    ROLE_POLICY,
    SECURITY_GROUP,
    ZONES,
    ami_today,
    import_infra,
    longest_names_config_env,
    prefix,
    stack_config,
    stack_config_env,
    statements,
    systemd_verify,
)
from moto import mock_aws
from parliament import analyze_policy_string
from pulumi.runtime import rpc

from llmfleet.config import from_pulumi_config_env
from llmfleet.config.aws import UBUNTU_ARM64_PARAMETER, UBUNTU_PARAMETER
from llmfleet.observability.alertmanager import check_alertmanager_config
from llmfleet.observability.prometheus import promtool
from llmfleet.observability.rules import ALERT_NAMES
from llmfleet.paths import repo_root

INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
ATTACHMENT = "aws:ec2/volumeAttachment:VolumeAttachment"
PARAMETER = "aws:ssm/parameter:Parameter"
PASSWORD = "random:index/randomPassword:RandomPassword"
BUCKET = "aws:s3/bucket:Bucket"
OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
ROLE = "aws:iam/role:Role"
PROFILE = "aws:iam/instanceProfile:InstanceProfile"

SUBNETS = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]
SECRET_SIGNATURE = rpc._special_sig_key
SECRET_SIGIL = rpc._special_secret_sig
SLACK = "/acme/alerts/slack-webhook"
PAGERDUTY = "/acme/alerts/pagerduty-key"
# Resource types that take no tags.
UNTAGGABLE = {ATTACHMENT, ROLE_POLICY, POLICY_ATTACHMENT,
              "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"}


def run_monitor(program, stack: str = "startup-prod", *, monitor: dict | None = None,
                env: dict[str, str] | None = None, public_address: bool = False,
                with_groups: bool = False) -> dict[str, Any]:
    """The Monitor as Deployment builds it (the same args), alone in a program; with
    `with_groups`, beside the SecurityGroups component whose monitor group it joins."""
    if env is None:
        section = {**stack_config(stack).get("llmfleet:monitor", {}), **(monitor or {})}
        env = stack_config_env(stack, monitor=section or None)
    stem = import_infra("common").name_stem(from_pulumi_config_env(env, stack).stack_name)

    def build() -> dict[str, Any]:
        component = import_infra("monitor")
        config = from_pulumi_config_env(env, stack)
        tags = import_infra("deployment").stack_tags(config, stack)
        group = "sg-0123456789abcdef0"
        if with_groups:
            security = import_infra("security")
            groups = security.SecurityGroups(f"{stem}-sg", security.SecurityGroupsArgs(
                vpc_id="vpc-0123456789abcdef0", vllm_port=config.gpu_node.vllm_port,
                edge_cidrs=config.edge.allowed_cidrs, tags=tags))
            group = groups.monitor_id
        made = component.Monitor(f"{stem}-monitor", component.MonitorArgs(
            config=config, stack=stack, subnet_ids=SUBNETS, security_group_id=group,
            public_address=public_address, tags=tags))
        return {"instance_id": made.instance_id, "tags": tags,
                "grafana_password_parameter": made.grafana_password_parameter,
                "grafana_password_command": made.grafana_password_command,
                "port_forward_commands": made.port_forward_commands}

    return program.run_inline(env, stack, build)


def user_data(mocks, name: str = "startup-prod-monitor-instance") -> str:
    return mocks.one(INSTANCE, name)["userData"]


def write_files(text: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}


def bundle(mocks, name: str = "startup-prod-monitor-config") -> dict[str, str]:
    return json.loads(mocks.one(OBJECT, name)["content"])


def test_one_instance_in_the_monitor_group_which_admits_nothing(program, mocks):
    run_monitor(program, with_groups=True)

    instance = mocks.one(INSTANCE, "startup-prod-monitor-instance")
    monitor_group = mocks.ids[SECURITY_GROUP, "startup-prod-sg-monitor"]
    assert instance["vpcSecurityGroupIds"] == [monitor_group]
    assert not [r for r in mocks.of_type(INGRESS) if r.inputs["securityGroupId"] == monitor_group]
    assert "keyName" not in instance and "securityGroups" not in instance
    assert instance["associatePublicIpAddress"] is False
    assert instance["subnetId"] == SUBNETS[0]
    assert instance["instanceType"] == "t4g.small"
    assert instance["iamInstanceProfile"] == mocks.outputs[PROFILE, "startup-prod-monitor-profile"][
        "name"]
    assert instance["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                           "httpPutResponseHopLimit": 1}
    assert instance["rootBlockDevice"] | {"tags": None} == {
        "volumeSize": 10, "volumeType": "gp3", "encrypted": True, "deleteOnTermination": True,
        "tags": None}
    assert instance["maintenanceOptions"] == {"autoRecovery": "default"}
    # The image comes from the template (pinned there); a new pin reaches the monitor when it
    # is next replaced, and none is set on the instance.
    assert "ami" not in instance
    assert instance["launchTemplate"] == {
        "id": mocks.ids[LAUNCH_TEMPLATE, "startup-prod-monitor-template"], "version": "$Default"}
    template = mocks.one(LAUNCH_TEMPLATE, "startup-prod-monitor-template")
    assert template["imageId"] == ami_today(UBUNTU_ARM64_PARAMETER)
    assert set(template) <= {"description", "imageId", "updateDefaultVersion",
                             "tagSpecifications", "tags"}, "the instance sets everything else"
    options = mocks.options[INSTANCE, "startup-prod-monitor-instance"]
    assert options.ignore_changes == []
    # A new config is a new instance, and the old one goes first (the volume moves over).
    assert instance["userDataReplaceOnChange"] is True
    assert options.delete_before_replace
    assert mocks.options[ATTACHMENT, "startup-prod-monitor-data"].delete_before_replace


def test_without_nat_it_gets_an_outbound_address_and_still_no_way_in(program, mocks):
    run_monitor(program, "university-prod", public_address=True, with_groups=True)

    assert mocks.one(INSTANCE, "university-prod-monitor-instance")[
        "associatePublicIpAddress"] is True
    group = mocks.ids[SECURITY_GROUP, "university-prod-sg-monitor"]
    assert not [r for r in mocks.of_type(INGRESS) if r.inputs["securityGroupId"] == group]


@pytest.mark.parametrize(("instance_type", "parameter"), [
    ("t4g.small", UBUNTU_ARM64_PARAMETER), ("t3.small", UBUNTU_PARAMETER)])
def test_the_image_follows_the_instance_types_architecture(program, mocks, instance_type,
                                                           parameter):
    run_monitor(program, monitor={"instance_type": instance_type})

    template = mocks.one(LAUNCH_TEMPLATE, "startup-prod-monitor-template")
    assert template["imageId"] == ami_today(parameter)
    arch = "arm64" if "arm64" in parameter else "amd64"
    assert f"Ubuntu 24.04 ({arch})" in user_data(mocks)


def test_prometheus_data_lives_on_its_own_encrypted_volume_in_the_instances_zone(program,
                                                                                 mocks):
    run_monitor(program, monitor={"data_volume_gib": 50, "retention_days": 30})

    volume = mocks.one(VOLUME, "startup-prod-monitor-data")
    assert volume["encrypted"] is True and volume["type"] == "gp3" and volume["size"] == 50
    # The mocked subnet's zone: the instance's.
    assert volume["availabilityZone"] == ZONES[0]
    assert mocks.one(ATTACHMENT, "startup-prod-monitor-data") == {
        "deviceName": "/dev/sdf",
        "volumeId": mocks.ids[VOLUME, "startup-prod-monitor-data"],
        "instanceId": mocks.ids[INSTANCE, "startup-prod-monitor-instance"],
        "stopInstanceBeforeDetaching": True,
    }
    files = write_files(user_data(mocks))
    volume_script = files["/usr/local/sbin/llmfleet-monitor-volume"]
    assert f"volume={mocks.ids[VOLUME, 'startup-prod-monitor-data']}" in volume_script
    # 30 days, and never more than 85 % of the 50 GiB volume.
    prometheus = files["/etc/systemd/system/prometheus.service.d/llmfleet.conf"]
    assert "--storage.tsdb.retention.time=30d" in prometheus
    assert "--storage.tsdb.retention.size=42GB" in prometheus
    assert "--storage.tsdb.path=/var/lib/prometheus/metrics2" in prometheus
    assert "RequiresMountsFor=/var/lib/prometheus" in prometheus


def test_the_role_reads_exactly_its_parameters_and_its_config_object(program, mocks):
    run_monitor(program, monitor={"slack_webhook_parameter": SLACK,
                                  "pagerduty_routing_key_parameter": PAGERDUTY})

    document = mocks.one(ROLE_POLICY, "startup-prod-monitor-policy")["policy"]
    found = {s["Sid"]: s for s in statements(document)}
    ssm = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter"
    bucket = mocks.outputs[BUCKET, "startup-prod-monitor-config"]["bucket"]
    assert found == {
        "DiscoverScrapeTargets": {
            "Sid": "DiscoverScrapeTargets", "Effect": "Allow",
            "Action": ["ec2:DescribeAvailabilityZones", "ec2:DescribeInstances"],
            "Resource": "*"},
        "ReadItsSecrets": {
            "Sid": "ReadItsSecrets", "Effect": "Allow", "Action": "ssm:GetParameter",
            "Resource": [f"{ssm}{SLACK}", f"{ssm}{PAGERDUTY}",
                         f"{ssm}/llmfleet/startup-prod/grafana-admin-password"]},
        "FetchItsConfig": {
            "Sid": "FetchItsConfig", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/monitor-config.json"},
    }
    assert analyze_policy_string(document).findings == []
    role = mocks.one(ROLE, "startup-prod-monitor-role")
    assert statements(role["assumeRolePolicy"]) == [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole"}]
    assert not [r for r in mocks.of_type(POLICY_ATTACHMENT)
                if r.name.startswith("startup-prod-monitor-")]
    # Created after its rights: its first boot reads the object and the parameters.
    depends = mocks.options[INSTANCE, "startup-prod-monitor-instance"].depends_on
    assert any(urn.endswith("::startup-prod-monitor-policy") for urn in depends)
    assert any(urn.endswith("::startup-prod-monitor-config") for urn in depends)


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_policy_passes_parliament_in_every_stack(program, mocks, stack):
    run_monitor(program, stack)

    policies = {p.name.rsplit("-", 1)[-1]: p for p in mocks.of_type(ROLE_POLICY)}
    assert set(policies) == {"ssm", "policy"}  # Session Manager, and its own rights
    assert statements(policies["policy"].inputs["policy"])[1]["Resource"] == [
        f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/llmfleet/{stack}/grafana-admin-password"]
    for policy in policies.values():
        findings = analyze_policy_string(policy.inputs["policy"]).findings
        assert findings == [], [(f.issue, f.detail) for f in findings]


def test_grafanas_password_is_generated_into_a_securestring_and_nowhere_else(program, mocks):
    exports = run_monitor(program, monitor={"slack_webhook_parameter": SLACK})

    generated = mocks.outputs[PASSWORD, "startup-prod-monitor-grafana-password"]["result"]
    assert mocks.one(PASSWORD, "startup-prod-monitor-grafana-password") == {
        "length": 32, "special": False}
    parameter = mocks.one(PARAMETER, "startup-prod-monitor-grafana-password")
    assert parameter["name"] == "/llmfleet/startup-prod/grafana-admin-password"
    assert parameter["type"] == "SecureString"
    # A Pulumi secret (encrypted in the state), holding the generated password.
    assert parameter["value"][SECRET_SIGNATURE] == SECRET_SIGIL
    assert parameter["value"]["value"] == generated
    for text in (user_data(mocks), mocks.one(OBJECT, "startup-prod-monitor-config")["content"],
                 json.dumps(exports)):
        assert generated not in text
    # Grafana reads it from systemd's copy of the root-only file the boot fetched.
    grafana = write_files(user_data(mocks))[
        "/etc/systemd/system/grafana-server.service.d/llmfleet.conf"]
    assert ("LoadCredential=grafana-admin-password:/etc/llmfleet/secrets/grafana-admin-password"
            in grafana.splitlines())
    assert ("Environment=GF_SECURITY_ADMIN_PASSWORD=$__file{%d/grafana-admin-password}"
            in grafana.splitlines())
    assert exports["grafana_password_command"] == (
        f"aws ssm get-parameter --region {REGION} --name "
        "/llmfleet/startup-prod/grafana-admin-password --with-decryption "
        "--query Parameter.Value --output text")


def test_slack_and_pagerduty_are_read_at_boot_into_root_only_files(program, mocks):
    run_monitor(program, monitor={"slack_webhook_parameter": SLACK,
                                  "pagerduty_routing_key_parameter": PAGERDUTY})

    files = write_files(user_data(mocks))
    fetch = files["/etc/systemd/system/llmfleet-monitor-secrets.service"]
    assert (f"ExecStart=/usr/bin/python3 /usr/local/lib/llmfleet/monitor_boot.py secrets "
            f"{REGION} /etc/llmfleet/secrets slack-webhook={SLACK} "
            f"pagerduty-routing-key={PAGERDUTY} "
            "grafana-admin-password=/llmfleet/startup-prod/grafana-admin-password") in fetch
    alertmanager = files["/etc/systemd/system/prometheus-alertmanager.service.d/llmfleet.conf"]
    assert {"LoadCredential=slack-webhook:/etc/llmfleet/secrets/slack-webhook",
            "LoadCredential=pagerduty-routing-key:/etc/llmfleet/secrets/pagerduty-routing-key",
            "Wants=llmfleet-monitor-secrets.service"} <= set(alertmanager.splitlines())
    rendered = yaml.safe_load(bundle(mocks)["/etc/llmfleet/monitor/alertmanager.yml"])
    receivers = {r["name"]: r for r in rendered["receivers"]}
    credentials = "/run/credentials/prometheus-alertmanager.service"
    assert receivers["slack"]["slack_configs"][0]["api_url_file"] == (
        f"{credentials}/slack-webhook")
    assert receivers["pagerduty"]["pagerduty_configs"][0]["routing_key_file"] == (
        f"{credentials}/pagerduty-routing-key")
    assert rendered["route"]["receiver"] == "slack"


def test_without_a_destination_alerts_go_nowhere_and_the_run_says_so(program, mocks,
                                                                    monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warnings.append(message))
    run_monitor(program)

    assert any("alerts fire in Alertmanager and go nowhere" in w for w in warnings)
    rendered = yaml.safe_load(bundle(mocks)["/etc/llmfleet/monitor/alertmanager.yml"])
    assert rendered["route"]["receiver"] == "none"
    alertmanager = write_files(user_data(mocks))[
        "/etc/systemd/system/prometheus-alertmanager.service.d/llmfleet.conf"]
    assert "LoadCredential" not in alertmanager


def test_outputs_are_the_instance_and_the_exact_port_forward_commands(program, mocks):
    exports = run_monitor(program)

    instance_id = mocks.ids[INSTANCE, "startup-prod-monitor-instance"]
    assert exports["instance_id"] == instance_id

    def forward(port: int) -> str:
        return (f"aws ssm start-session --region {REGION} --target {instance_id} "
                "--document-name AWS-StartPortForwardingSession --parameters "
                f"""'{{"portNumber":["{port}"],"localPortNumber":["{port}"]}}'""")

    assert exports["port_forward_commands"] == {
        "grafana": forward(3000), "prometheus": forward(9090), "alertmanager": forward(9093)}
    assert exports["grafana_password_parameter"] == "/llmfleet/startup-prod/grafana-admin-password"


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_monitor_resource_carries_the_stack_tags(program, mocks, stack):
    exports = run_monitor(program, stack)

    expected = {**exports["tags"], "llmfleet:role": "monitor"}
    resources = [r for r in mocks.registered if r.type.startswith("aws:")]
    assert {r.type for r in resources} >= {INSTANCE, VOLUME, PARAMETER, BUCKET, OBJECT, ROLE}
    for resource in resources:
        if resource.type in UNTAGGABLE:
            assert "tags" not in resource.inputs, f"{resource.type} is taggable after all"
            continue
        assert expected.items() <= resource.inputs["tags"].items(), resource.name
    root = mocks.one(INSTANCE, f"{prefix(stack)}-monitor-instance")["rootBlockDevice"]["tags"]
    assert expected.items() <= root.items()
    # The root disk and the network interface get them as they are made.
    launched = mocks.one(LAUNCH_TEMPLATE, f"{prefix(stack)}-monitor-template")
    specs = {s["resourceType"]: s["tags"] for s in launched["tagSpecifications"]}
    assert set(specs) == {"volume", "network-interface"}
    assert all(expected.items() <= tags.items() for tags in specs.values())


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_user_data_is_valid_cloud_config_and_its_scripts_parse(program, mocks, stack, tmp_path):
    run_monitor(program, stack, monitor={"slack_webhook_parameter": SLACK,
                                         "pagerduty_routing_key_parameter": PAGERDUTY})

    text = user_data(mocks, f"{prefix(stack)}-monitor-instance")
    assert len(text.encode()) < 16 * 1024
    path = tmp_path / "monitor.yaml"
    path.write_text(text)
    binary = shutil.which("cloud-init")
    assert binary, "cloud-init is not installed (scripts/bootstrap.sh installs it)"
    checked = subprocess.run([binary, "schema", "--config-file", str(path)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0 and "Valid cloud-config" in checked.stdout, (
        checked.stdout + checked.stderr)

    files = write_files(text)
    for script in ("/usr/local/sbin/llmfleet-monitor-volume",
                   "/usr/local/sbin/llmfleet-monitor-install"):
        (tmp_path / "script").write_text(files[script])
        parsed = subprocess.run(["bash", "-n", str(tmp_path / "script")], capture_output=True,
                                text=True, check=False)
        assert parsed.returncode == 0, parsed.stderr
    (tmp_path / "monitor_boot.py").write_text(files["/usr/local/lib/llmfleet/monitor_boot.py"])
    py_compile.compile(str(tmp_path / "monitor_boot.py"), doraise=True)
    # No secret, and no URL where a secret would be.
    assert "hooks.slack.com" not in text and "mock-password" not in text
    # Grafana only after its signing key's fingerprint is checked.
    install = files["/usr/local/sbin/llmfleet-monitor-install"]
    assert install.index("B53AE77BADB630A683046005963FA27710458545") < install.index(
        "install grafana")


def test_the_runcmd_mounts_installs_configures_then_starts(program, mocks):
    run_monitor(program)

    text = user_data(mocks)
    content = mocks.one(OBJECT, "startup-prod-monitor-config")["content"]
    bucket = mocks.outputs[BUCKET, "startup-prod-monitor-config"]["bucket"]
    assert yaml.safe_load(text)["runcmd"] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "llmfleet-monitor-volume.service"],
        ["/usr/local/sbin/llmfleet-monitor-install"],
        ["/usr/bin/python3", "/usr/local/lib/llmfleet/monitor_boot.py", "configs", REGION,
         bucket, "monitor-config.json", hashlib.sha256(content.encode()).hexdigest()],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "prometheus-alertmanager.service", "prometheus.service",
         "grafana-server.service"],
        ["systemctl", "restart", "prometheus-alertmanager.service"],
        ["systemctl", "restart", "prometheus.service"],
        ["systemctl", "restart", "grafana-server.service"],
    ]


def test_the_same_config_renders_the_same_user_data_and_a_new_one_changes_it():
    cloud_init, monitor_host = import_infra("cloud_init"), import_infra("monitor_host")

    def render(env: dict[str, str]) -> str:
        config = from_pulumi_config_env(env, "startup-prod")
        content = monitor_host.config_bundle(config, stack="startup-prod", region=REGION,
                                             grafana_password_parameter="/p")
        return cloud_init.render_monitor(
            config, stack="startup-prod", region=REGION, volume_id="vol-0123456789abcdef0",
            grafana_password_parameter="/p", config_bucket="b",
            config_sha256=hashlib.sha256(content.encode()).hexdigest())

    env = stack_config_env("startup-prod")
    assert render(env) == render(dict(env))
    raised = stack_config_env("startup-prod", alerts={"high_p99_latency": {"threshold": 20}})
    assert render(raised) != render(env)


def _configs_on_disk(files: dict[str, str], root: Path) -> None:
    """The bundle's files under `root`, their absolute paths to each other moved along."""
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("/etc/llmfleet/monitor/", f"{root}/etc/llmfleet/monitor/"))


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_the_configs_as_rendered_for_aws_pass_promtool_and_amtool(program, mocks, stack,
                                                                  tmp_path):
    run_monitor(program, stack, monitor={"slack_webhook_parameter": SLACK,
                                         "pagerduty_routing_key_parameter": PAGERDUTY})

    files = bundle(mocks, f"{prefix(stack)}-monitor-config")
    _configs_on_disk(files, tmp_path)
    monitor_dir = tmp_path / "etc/llmfleet/monitor"
    rules = promtool("check", "rules", monitor_dir / "rules.yml")
    assert rules.ok, rules.output
    config = promtool("check", "config", monitor_dir / "prometheus.yml")  # and its rule file
    assert config.ok, config.output
    alertmanager = check_alertmanager_config(monitor_dir / "alertmanager.yml")
    assert alertmanager.ok, alertmanager.output

    # The same rules module as the sandbox: every alert is there.
    loaded = yaml.safe_load(files["/etc/llmfleet/monitor/rules.yml"])
    alerts = {r["alert"] for g in loaded["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == set(ALERT_NAMES)
    prometheus = yaml.safe_load(files["/etc/llmfleet/monitor/prometheus.yml"])
    assert prometheus["rule_files"] == ["/etc/llmfleet/monitor/rules.yml"]
    for job in prometheus["scrape_configs"]:
        for sd in job.get("ec2_sd_configs", []):
            assert {"name": "tag:llmfleet:stack", "values": [stack]} in sd["filters"]
            assert sd["region"] == REGION


def test_grafana_gets_the_datasource_and_this_repositorys_dashboards(program, mocks):
    run_monitor(program, "startup-prod")

    files = bundle(mocks)
    dashboards = repo_root() / "grafana" / "dashboards"
    for path in dashboards.glob("*.json"):
        assert files[f"/var/lib/grafana/dashboards/llmfleet/{path.name}"] == path.read_text()
    provider = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/llmfleet.yaml"])
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/llmfleet"
    [source] = yaml.safe_load(
        files["/etc/grafana/provisioning/datasources/llmfleet.yaml"])["datasources"]
    assert source["uid"] == "llmfleet-prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"
    assert source["jsonData"]["timeInterval"] == "5s"
    # The dashboards pick their Prometheus with a datasource variable, whose default is
    # Grafana's default datasource: this one.
    assert source["isDefault"] is True
    for dashboard in dashboards.glob("*.json"):
        model = json.loads(dashboard.read_text())
        assert model["templating"]["list"][0]["query"] == source["type"]
        for panel in model["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}"


# The packaged units the drop-ins change, as stand-ins, and what the units run.
PACKAGED_UNITS = {"prometheus.service": "/usr/bin/prometheus",
                  "prometheus-alertmanager.service": "/usr/bin/prometheus-alertmanager",
                  "grafana-server.service": "/usr/share/grafana/bin/grafana"}
EXECUTABLES = ("/usr/bin/python3", "/usr/local/sbin/llmfleet-monitor-volume",
               *PACKAGED_UNITS.values())


def test_units_and_drop_ins_pass_systemd_analyze_verify(program, mocks, tmp_path):
    run_monitor(program, monitor={"slack_webhook_parameter": SLACK,
                                  "pagerduty_routing_key_parameter": PAGERDUTY})
    files = write_files(user_data(mocks))

    units, verified = systemd_verify(files, PACKAGED_UNITS, EXECUTABLES, tmp_path / "root")

    assert units == {"llmfleet-monitor-volume.service", "llmfleet-monitor-secrets.service",
                     *PACKAGED_UNITS}
    # Unknown keys and bad values are only warnings to systemd; here they fail too.
    assert verified.returncode == 0 and not (verified.stdout + verified.stderr).strip(), (
        verified.stdout + verified.stderr)


def test_everything_listens_on_loopback_only(program, mocks):
    run_monitor(program)

    files = write_files(user_data(mocks))
    prometheus = files["/etc/systemd/system/prometheus.service.d/llmfleet.conf"]
    alertmanager = files["/etc/systemd/system/prometheus-alertmanager.service.d/llmfleet.conf"]
    grafana = files["/etc/systemd/system/grafana-server.service.d/llmfleet.conf"]
    assert "--web.listen-address=127.0.0.1:9090" in prometheus
    assert "--web.listen-address=127.0.0.1:9093" in alertmanager
    # No cluster port, which would listen on every address.
    assert "--cluster.listen-address=" in alertmanager.split()
    assert {"Environment=GF_SERVER_HTTP_ADDR=127.0.0.1",
            "Environment=GF_SERVER_HTTP_PORT=3000"} <= set(grafana.splitlines())


def test_the_longest_names_fit_every_limit(program, mocks):
    # The mocks refuse a generated name over AWS's limit (the bucket's 63 characters first).
    run_monitor(program, LONGEST_STACK, env=longest_names_config_env())

    [bucket] = mocks.of_type(BUCKET)
    assert len(mocks.outputs[BUCKET, bucket.name]["bucket"]) <= 63
    [role] = mocks.of_type(ROLE)
    assert len(mocks.outputs[ROLE, role.name]["name"]) <= 64


def test_a_disabled_monitor_is_not_built(program):
    with pytest.raises(ValueError, match=r"monitor\.enabled is false"):
        run_monitor(program, monitor={"enabled": False})


# The boot script itself, as cloud-init writes it, against moto.

@pytest.fixture
def monitor_boot(program, mocks, tmp_path) -> ModuleType:
    run_monitor(program)
    path = tmp_path / "monitor_boot.py"
    path.write_text(write_files(user_data(mocks))["/usr/local/lib/llmfleet/monitor_boot.py"])
    spec = importlib.util.spec_from_file_location("monitor_boot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@mock_aws
def test_the_boot_writes_the_config_it_was_launched_with_and_refuses_another(monitor_boot,
                                                                             tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="llmfleet-monitor-config")
    files = {str(tmp_path / "etc/prometheus.yml"): "global: {}\n",
             str(tmp_path / "var/dashboards/a.json"): "{}"}
    body = json.dumps(files).encode()
    s3.put_object(Bucket="llmfleet-monitor-config", Key="monitor-config.json", Body=body)

    monitor_boot.configs(REGION, "llmfleet-monitor-config", "monitor-config.json",
                         hashlib.sha256(body).hexdigest())
    assert (tmp_path / "etc/prometheus.yml").read_text() == "global: {}\n"
    assert (tmp_path / "var/dashboards/a.json").stat().st_mode & 0o777 == 0o644

    with pytest.raises(SystemExit, match="is not the config this instance was launched with"):
        monitor_boot.configs(REGION, "llmfleet-monitor-config", "monitor-config.json", "0" * 64,
                             attempts=2, delay_s=0)
    with pytest.raises(SystemExit, match="cannot be read"):
        monitor_boot.configs(REGION, "llmfleet-monitor-config", "elsewhere.json", "0" * 64,
                             attempts=2, delay_s=0)


@mock_aws
def test_the_boot_keeps_secrets_in_root_only_files_and_names_what_it_cannot_read(
        monitor_boot, tmp_path, capsys):
    ssm = boto3.client("ssm", region_name=REGION)
    hook = "https://hooks.slack.com/services/T000/B000/secret-part"
    ssm.put_parameter(Name=SLACK, Value=hook + "\n", Type="SecureString")
    ssm.put_parameter(Name="/p/grafana", Value="pw", Type="SecureString")
    secrets = tmp_path / "secrets"

    monitor_boot.secrets(REGION, str(secrets), f"slack-webhook={SLACK}",
                         "grafana-admin-password=/p/grafana")
    assert (secrets / "slack-webhook").read_text() == hook
    assert (secrets / "slack-webhook").stat().st_mode & 0o777 == 0o600
    assert secrets.stat().st_mode & 0o777 == 0o700

    ssm.delete_parameter(Name="/p/grafana")
    with pytest.raises(SystemExit):
        monitor_boot.secrets(REGION, str(secrets), f"slack-webhook={SLACK}",
                             "grafana-admin-password=/p/grafana")
    err = capsys.readouterr().err
    assert "cannot read /p/grafana: ParameterNotFound" in err and hook not in err
    # What could be read is still fresh; what could not keeps the boot before's file.
    assert (secrets / "grafana-admin-password").read_text() == "pw"


def test_grafana_is_held_to_the_series_the_dashboards_are_built_for(program, mocks, tmp_path):
    run_monitor(program)
    monitor_host = import_infra("monitor_host")
    # The dashboards' SDK names its Grafana as "<build>!<Grafana version>" in pyproject.toml.
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    sdk = re.search(r'"grafana-foundation-sdk==\d+!(\d+\.\d+)\.\d+"', pyproject)
    assert sdk is not None and sdk.group(1) == monitor_host.GRAFANA_SERIES

    script = write_files(user_data(mocks))[monitor_host.INSTALL_SCRIPT]
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if "printf 'Package: grafana" in line)
    command = " ".join(line.strip().rstrip("\\") for line in lines[start:start + 2])
    written = tmp_path / "llmfleet-grafana"
    # The script's own printf, through real bash, into a file of the test's.
    subprocess.run(["bash", "-c", command.replace("/etc/apt/preferences.d/llmfleet-grafana",
                                                  str(written))], check=True)
    assert written.read_text() == (
        f"Package: grafana\nPin: version {monitor_host.GRAFANA_SERIES}.*\nPin-Priority: 1001\n")
    # Pinned before Grafana is installed.
    assert lines.index(next(line for line in lines if "install grafana" in line)) > start
