"""The llmfleet policy pack: each check in infra/policies.py as a mandatory Pulumi policy.

The checks are plain functions, tested on their own and over the mocked program in tests/infra;
this file only hands them to Pulumi's policy engine. The cold-start check compares each GPU
group against the cold start its own stack declares (`gpu_node.cold_start_s` in
stacks/Pulumi.<stack>.yaml), so the pack needs no configuration of its own.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra"))

# infra/ is on the path only from the line above.
import policies

from llmfleet.config import ConfigKind, FleetConfig, load_config
from llmfleet.config.aws import TlsMode
from llmfleet.config.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _policy(name: str, check: policies.Check) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for violation in check(args.resource_type, args.props):
            report_violation(violation, None)

    return ResourceValidationPolicy(
        name=name, description=_summary(check), validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY)


def _cold_start_policy() -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if not policies.is_gpu_group(args.resource_type, args.props):
            return
        stack = stack_of(args.urn)
        try:
            cold_start_s = stack_config(stack).gpu_node.cold_start_s
        except ConfigError as error:
            report_violation(f"cannot read stack {stack!r}'s cold start: {error}", None)
            return
        for violation in policies.grace_covers_cold_start(
                args.resource_type, args.props, cold_start_s=cold_start_s):
            report_violation(violation, None)

    return ResourceValidationPolicy(
        name="grace-covers-cold-start",
        description=_summary(policies.grace_covers_cold_start),
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _plain_http_policy() -> ResourceValidationPolicy:
    # Advisory: the stack chose it explicitly (edge.tls.plain_http_from_anywhere); every
    # preview still says what it costs.
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type != policies.INGRESS:
            return
        try:
            tls_off = stack_config(stack_of(args.urn)).edge.tls.mode is TlsMode.OFF
        except ConfigError:
            return  # the cold-start policy already refuses a stack without its file
        for violation in policies.plain_http_from_anywhere(
                args.resource_type, args.props, tls_off=tls_off):
            report_violation(violation, None)

    return ResourceValidationPolicy(
        name="plain-http-from-anywhere",
        description=_summary(policies.plain_http_from_anywhere),
        validate=validate,
        enforcement_level=EnforcementLevel.ADVISORY,
    )


def _summary(check: object) -> str:
    """A check's docstring up to its first comma or full stop, on one line."""
    text = " ".join((getattr(check, "__doc__", None) or "").split())
    return text.split(", or ")[0].split(". ")[0].rstrip(".:")


def stack_of(urn: str) -> str:
    """The stack a resource belongs to: urn:pulumi:<stack>::<project>::<type>::<name>."""
    return urn.removeprefix("urn:pulumi:").split("::", 1)[0]


@functools.cache
def stack_config(stack: str) -> FleetConfig:
    """The stack's config as its own file sets it (Pulumi.yaml's stackConfigDir)."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text(encoding="utf-8"))
    path = REPO / project.get("stackConfigDir", ".") / f"Pulumi.{stack}.yaml"
    return load_config(path, kind=ConfigKind.STACK).config


POLICIES = [
    *(_policy(check.__name__.replace("_", "-"), check) for check in policies.CHECKS),
    _cold_start_policy(),
    _plain_http_policy(),
]

if __name__ == "__main__":
    # Serves the policies to the Pulumi engine until it is done with them.
    PolicyPack(name="llmfleet", policies=POLICIES)
