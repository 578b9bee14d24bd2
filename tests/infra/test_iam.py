"""Every inline IAM policy the program registers, through parliament (an IAM linter that knows
each action's resource types, ARN formats and condition keys)."""

from __future__ import annotations

import pytest
from infra_helpers import ALL_STACKS, ROLE_POLICY, stack_config_env
from parliament import analyze_policy_string


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_inline_policy_passes_parliament(program, mocks, stack):
    program.run(stack_config_env(stack), stack=stack)

    policies = mocks.of_type(ROLE_POLICY)
    # The GPU node's token and lifecycle rights, the edge's fleet and health rights, the drain
    # and scaler Lambdas'.
    assert len(policies) == 7  # and the monitor's
    for policy in policies:
        findings = analyze_policy_string(policy.inputs["policy"]).findings
        assert findings == [], f"{policy.name}: {[(f.issue, f.detail) for f in findings]}"
