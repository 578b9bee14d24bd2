"""Rules AWS enforces (or that bite at run time) which Pulumi's mocks never check.

Each check is a pure function of one resource's type and inputs, as the engine sees them (Pulumi
property names: `mixedInstancesPolicy`, `warmPool`, ...), and returns its violations as text; an
empty list means it passes or does not apply. The policy pack in policy/ runs them on every
`pulumi preview --policy-pack policy`, and tests/infra runs them over the mocked program.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from common import ROLE_TAG

from llmfleet.config.base import GPU_INSTANCE_FAMILIES
from llmfleet.services import EDGE_HOST_PORTS

GROUP = "aws:autoscaling/group:Group"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
GPU_ROLE = "gpu-node"

Inputs = Mapping[str, Any]
Check = Callable[[str, Inputs], list[str]]


def no_warm_pool_on_mixed_instances(resource_type: str, inputs: Inputs) -> list[str]:
    """AWS refuses a warm pool on a group with a mixed instances policy (spot groups)."""
    if resource_type == GROUP and inputs.get("warmPool") and inputs.get("mixedInstancesPolicy"):
        return ["a warm pool on a mixed-instances group: AWS refuses it; put the warm pool on "
                "a single-type on-demand group"]
    return []


def sizes_ordered(resource_type: str, inputs: Inputs) -> list[str]:
    """min_size <= desired_capacity <= max_size, or AWS rejects the group."""
    if resource_type != GROUP:
        return []
    low, high = inputs.get("minSize"), inputs.get("maxSize")
    desired = inputs.get("desiredCapacity", low)
    if None in (low, high) or low <= desired <= high:
        return []
    return [f"sizes must satisfy min <= desired <= max; got {low} <= {desired} <= {high}"]


def is_gpu_group(resource_type: str, inputs: Inputs) -> bool:
    return resource_type == GROUP and _role(inputs) == GPU_ROLE


def grace_covers_cold_start(resource_type: str, inputs: Inputs, *, cold_start_s: int) -> list[str]:
    """A GPU group's health-check grace (and instance warm-up) lasts at least its stack's cold
    start, or nodes are judged before vLLM has loaded its model."""
    if not is_gpu_group(resource_type, inputs):
        return []
    found = []
    for key in ("healthCheckGracePeriod", "defaultInstanceWarmup"):
        value = inputs.get(key) or 0
        if value < cold_start_s:
            found.append(f"{key} is {value:g} s, shorter than the {cold_start_s} s cold start")
    return found


def plain_http_from_anywhere(resource_type: str, inputs: Inputs, *, tls_off: bool
                             ) -> list[str]:
    """The edge's HTTP port open to the whole internet while its stack serves plain HTTP: API
    keys cross the internet in clear text (`edge.tls.plain_http_from_anywhere` allows it, and
    this says so on every preview)."""
    if resource_type != INGRESS or not tls_off or inputs.get("fromPort") != EDGE_HOST_PORTS.http:
        return []
    cidr = inputs.get("cidrIpv4") or inputs.get("cidrIpv6")
    if cidr not in ("0.0.0.0/0", "::/0"):
        return []
    return [f"port {EDGE_HOST_PORTS.http} is open to {cidr} with edge.tls.mode off: API keys "
            "cross the internet in clear text; set edge.tls.mode to acme or certificate"]


def fleet_types_have_gpus(resource_type: str, inputs: Inputs) -> list[str]:
    """Every instance type a GPU group or GPU launch template can launch has a supported NVIDIA
    GPU."""
    if _role(inputs) != GPU_ROLE:
        return []
    if resource_type == GROUP:
        types = [o.get("instanceType") for o in _overrides(inputs)]
    elif resource_type == LAUNCH_TEMPLATE:
        types = [inputs.get("instanceType")]
    else:
        return []
    return [
        f"{name} has no supported GPU; allowed families: {', '.join(GPU_INSTANCE_FAMILIES)}"
        for name in types
        if name is not None and name.split(".", 1)[0] not in GPU_INSTANCE_FAMILIES
    ]


def weights_positive(resource_type: str, inputs: Inputs) -> list[str]:
    """Every weighted capacity is a whole number from 1 to 999 (AWS's range)."""
    if resource_type != GROUP:
        return []
    found = []
    for override in _overrides(inputs):
        weight = override.get("weightedCapacity")
        if weight is None:
            continue
        if not str(weight).isdigit() or not 1 <= int(weight) <= 999:
            found.append(f"{override.get('instanceType')} has weight {weight!r}; "
                         "allowed: a whole number from 1 to 999")
    return found


def spot_share_explicit(resource_type: str, inputs: Inputs) -> list[str]:
    """A mixed-instances group sets its on-demand share explicitly: the default is 100 %
    on-demand, which silently turns a spot fleet into an on-demand bill."""
    if resource_type != GROUP or not inputs.get("mixedInstancesPolicy"):
        return []
    distribution = inputs["mixedInstancesPolicy"].get("instancesDistribution") or {}
    missing = [key for key in ("onDemandBaseCapacity", "onDemandPercentageAboveBaseCapacity")
               if distribution.get(key) is None]
    return [f"instancesDistribution.{key} is not set (AWS's default: all on-demand)"
            for key in missing]


CHECKS: tuple[Check, ...] = (
    no_warm_pool_on_mixed_instances,
    sizes_ordered,
    fleet_types_have_gpus,
    weights_positive,
    spot_share_explicit,
)


def violations(resource_type: str, inputs: Inputs, *, cold_start_s: int) -> list[str]:
    """Every check, the cold-start one with the stack's cold start, over one resource."""
    found = [v for check in CHECKS for v in check(resource_type, inputs)]
    return found + grace_covers_cold_start(resource_type, inputs, cold_start_s=cold_start_s)


def _overrides(inputs: Inputs) -> list[Mapping[str, Any]]:
    policy = inputs.get("mixedInstancesPolicy") or {}
    return list((policy.get("launchTemplate") or {}).get("overrides") or [])


def _role(inputs: Inputs) -> str | None:
    tags = inputs.get("tags") or {}
    if isinstance(tags, Mapping):  # launch templates: a map; groups: a list of key/value
        return tags.get(ROLE_TAG)
    return next((t.get("value") for t in tags if t.get("key") == ROLE_TAG), None)
