"""What a node is started to run at once, from the config: the starting concurrency the live
sources give the policy until a queue has measured one (the simulator starts at its preset's
`max_num_seqs` the same way).

- On AWS a node runs vLLM with `model.extra_args` (`images/gpu-node/cloud-init.yaml.j2`):
  `--max-num-seqs N` there, else the simulated preset of the instance family
  (`FAMILY_PRESETS`, which `llmfleet simulate` uses too), per capacity unit.
- In the sandbox a simulated backend runs `sandbox.max_num_seqs`, else its preset's; a real
  vLLM backend what `model.extra_args` say, else its own default, which depends on the GPU:
  unknown here.

The sandbox's autoscaler hands the sandbox's figure to its Prometheus source; `pulumi up`
hands the fleet's to the scaler Lambda (`LLMFLEET_NODE_CONCURRENCY`), whose zip holds only the
runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmfleet.config import BackendKind, FleetConfig
from llmfleet.local.simbackend.presets import get_preset

# The simulated GPU behind each instance family; families without a close preset (L40S,
# V100, H100) have none rather than a silently wrong one.
FAMILY_PRESETS = {"g4dn": "t4", "g5": "a10g", "g6": "l4", "gr6": "l4", "p4d": "a100",
                  "p4de": "a100"}

_FLAG = "--max-num-seqs"


def family_preset(instance_type: str) -> str | None:
    """The preset for an instance type's family (`g4dn.xlarge` → `t4`), None without one."""
    return FAMILY_PRESETS.get(instance_type.split(".", 1)[0])


def max_num_seqs_arg(args: Sequence[str]) -> int | None:
    """`--max-num-seqs` in vLLM's arguments (`--max-num-seqs 64`, `--max-num-seqs=64`, also
    spelt with underscores); the last one wins, as in vLLM. None when absent or not a whole
    number above 0 (vLLM would not start with it)."""
    found: str | None = None
    for i, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name.replace("_", "-") != _FLAG:
            continue
        if equals:
            found = value
        elif i + 1 < len(args):
            found = args[i + 1]
    if found is None or not found.strip().isdigit() or int(found) < 1:
        return None
    return int(found)


def fleet_concurrency(config: FleetConfig) -> float | None:
    """Requests one capacity unit of the AWS fleet is started to run at once: vLLM's
    `--max-num-seqs` from `model.extra_args`, else the instance family's preset, over the
    type's weight (the unit the groups and the edge's `UnitConcurrency` count in). With
    several instance types the smallest, so that no node is planned fuller than it can be;
    types without a figure are left out. None when no type has one."""
    configured = max_num_seqs_arg(config.model.extra_args)
    per_unit = []
    for instance in config.fleet.instance_types:
        preset = family_preset(instance.type)
        seqs = configured if configured is not None else (
            get_preset(preset).max_num_seqs if preset else None)
        if seqs is not None:
            per_unit.append(seqs / instance.weight)
    return min(per_unit, default=None)


def sandbox_concurrency(config: FleetConfig) -> float | None:
    """Requests one sandbox backend is started to run at once (see the module's text)."""
    if config.sandbox.backend is BackendKind.VLLM:
        seqs = max_num_seqs_arg(config.model.extra_args)
        return None if seqs is None else float(seqs)
    seqs = config.sandbox.max_num_seqs
    return float(seqs if seqs is not None else get_preset(config.sandbox.preset).max_num_seqs)
