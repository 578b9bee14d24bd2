"""The llmfleet policy pack: each check in infra/policies.py as a mandatory Pulumi policy.

The checks are plain functions, tested on their own and over the mocked program in tests/infra;
this file only hands them to Pulumi's policy engine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra"))

# infra/ is on the path only from the line above.
import policies

from llmfleet.config import GpuNodeSpec

DEFAULT_COLD_START_S = GpuNodeSpec().cold_start_s


def _policy(name: str, check: policies.Check) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for violation in check(args.resource_type, args.props):
            report_violation(violation, None)

    return ResourceValidationPolicy(
        name=name, description=(check.__doc__ or name).splitlines()[0],
        validate=validate, enforcement_level=EnforcementLevel.MANDATORY)


def _cold_start_policy() -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        cold_start_s = args.get_config().get("cold_start_s", DEFAULT_COLD_START_S)
        for violation in policies.grace_covers_cold_start(
                args.resource_type, args.props, cold_start_s=cold_start_s):
            report_violation(violation, None)

    return ResourceValidationPolicy(
        name="grace-covers-cold-start",
        description=policies.grace_covers_cold_start.__doc__.splitlines()[0],
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        # The stack's gpu_node.cold_start_s, when it differs from the kit's default.
        config_schema=PolicyConfigSchema(
            properties={"cold_start_s": {"type": "integer", "default": DEFAULT_COLD_START_S}}),
    )


POLICIES = [
    *(_policy(check.__name__.replace("_", "-"), check) for check in policies.CHECKS),
    _cold_start_policy(),
]

if __name__ == "__main__":
    # Serves the policies to the Pulumi engine until it is done with them.
    PolicyPack(name="llmfleet", policies=POLICIES)
