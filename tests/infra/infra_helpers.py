"""Stack config as the program receives it, and readers for what the mocked program registered."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

# What the mocked AWS account answers with. 203.0.113.0/24 is a documentation range.
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
PUBLIC_IP = "203.0.113.10"



def ami_today(parameter: str) -> str:
    """The AMI id the mocked account's public SSM `parameter` names today."""
    return "ami-" + hashlib.sha256(parameter.encode()).hexdigest()[:17]


def registry_digest(reference: str) -> str:
    """The digest the mocked registry answers for `reference` (a tag)."""
    return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()


REPO = Path(__file__).resolve().parents[2]
STACKS = REPO / "stacks"
INFRA = REPO / "infra"
CLIENT_STACKS = ("university-prod", "startup-prod")
ALL_STACKS = ("example", *CLIENT_STACKS)

GROUP = "aws:autoscaling/group:Group"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
SUBNET = "aws:ec2/subnet:Subnet"


def stack_config(stack: str) -> dict[str, Any]:
    """A stack file's `config:` map as written."""
    return yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))["config"]


def stack_config_env(stack: str, **sections: Any) -> dict[str, str]:
    """The config the program receives: structured values as JSON strings. `sections` replace
    or add whole `llmfleet:<section>` values (pass None to drop one)."""
    config = stack_config(stack)
    for section, value in sections.items():
        config.pop(f"llmfleet:{section}", None)
        if value is not None:
            config[f"llmfleet:{section}"] = value
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in config.items()
    }


# The longest client and environment the config allows (slugs of 32 characters), on the
# example stack: every name derived from them must still fit AWS's limits.
LONGEST_CLIENT = "c" * 32
LONGEST_ENVIRONMENT = "e" * 32
LONGEST_STACK = f"{LONGEST_CLIENT}-{LONGEST_ENVIRONMENT}"


def longest_names_config_env() -> dict[str, str]:
    return {**stack_config_env("example"), "llmfleet:client": LONGEST_CLIENT,
            "llmfleet:environment": LONGEST_ENVIRONMENT}


def prefix(stack: str) -> str:
    """The name every resource of `stack` starts with: the config's <client>-<environment>."""
    config = stack_config(stack)
    return f"{config['llmfleet:client']}-{config['llmfleet:environment']}"


def user_data(inputs: dict[str, Any]) -> str:
    """A launch template's user data as cloud-init reads it: from the base64 EC2 wants, and
    unpacked when gzip-compressed."""
    raw = base64.b64decode(inputs["userData"])
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def group_tag_map(inputs: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in inputs["tags"]}


def statements(policy_json: str) -> list[dict[str, Any]]:
    document = json.loads(policy_json)
    assert document["Version"] == "2012-10-17"
    return document["Statement"]


def import_infra(module: str) -> Any:
    """One of infra/'s modules, imported the way the Pulumi program imports it."""
    if str(INFRA) not in sys.path:
        sys.path.insert(0, str(INFRA))
    return __import__(module)


def systemd_verify(files: dict[str, str], packaged: dict[str, str], executables: Sequence[str],
                   root: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """The units and drop-ins among cloud-init's `files`, checked by the real `systemd-analyze
    verify` in a root of this host's own units (the targets every service is ordered
    against), the `packaged` units (name -> ExecStart) as stand-ins and the `executables` the
    units run as empty scripts. Returns the unit names checked and systemd's answer."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is not installed: run ./scripts/bootstrap.sh (or "
                    "'sudo apt-get install -y systemd')")
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    for name, executable in packaged.items():
        (root / "lib/systemd/system" / name).write_text(f"[Service]\nExecStart={executable}\n")
    for executable in executables:
        path = root / executable.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    units = set()
    for path, content in files.items():
        if path.startswith("/etc/systemd/system/"):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            units.add(Path(path).name if path.endswith(".service")
                      else Path(path).parent.name.removesuffix(".d"))
    verified = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *sorted(units)],
                              capture_output=True, text=True, timeout=60, check=False)
    return units, verified
