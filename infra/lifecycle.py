"""The GPU groups' lifecycle hooks: a node joins when vLLM serves, and leaves when its requests
are done. Both groups carry the same two hooks; the node completes them itself
(images/gpu-node/llmfleet-lifecycle), so these timings are also what its boot script waits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmfleet.config import FleetConfig

LAUNCH_HOOK = "llmfleet-launching"
TERMINATE_HOOK = "llmfleet-terminating"
# Auto Scaling accepts heartbeats from 30 s to 2 hours.
HEARTBEAT_MIN_S, HEARTBEAT_MAX_S = 30, 7200
# Room beyond the configured cold start for a slow image pull or a busy registry.
LAUNCH_MARGIN_S = 300
# The node gives up (ABANDON) this long before Auto Scaling would, so its answer is the one used.
NODE_FIRST_S = 60
# Room beyond the read timeout for the last bytes of a stream and the completion call.
DRAIN_MARGIN_S = 30


@dataclass(frozen=True)
class LifecycleTiming:
    launch_heartbeat_s: int  # how long a launching node may take to serve
    ready_within_s: int  # the node's own limit, inside the heartbeat
    terminate_heartbeat_s: int  # how long a leaving node may finish its requests
    drain_within_s: int  # the node's own limit, inside the heartbeat

    @classmethod
    def of(cls, config: FleetConfig) -> LifecycleTiming:
        launch = _heartbeat(config.gpu_node.cold_start_s + LAUNCH_MARGIN_S)
        drain = _heartbeat(int(config.load_balancing.read_timeout_s) + DRAIN_MARGIN_S)
        return cls(launch_heartbeat_s=launch, ready_within_s=launch - NODE_FIRST_S,
                   terminate_heartbeat_s=drain, drain_within_s=drain - DRAIN_MARGIN_S)


def group_hooks(config: FleetConfig) -> list[dict[str, Any]]:
    """Both hooks, as an Auto Scaling group's `initial_lifecycle_hooks`: they exist before the
    group launches its first instance."""
    timing = LifecycleTiming.of(config)
    return [
        {
            "name": LAUNCH_HOOK,
            "lifecycle_transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "heartbeat_timeout": timing.launch_heartbeat_s,
            # A node that never said it serves is not put in service.
            "default_result": "ABANDON",
        },
        {
            "name": TERMINATE_HOOK,
            "lifecycle_transition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "heartbeat_timeout": timing.terminate_heartbeat_s,
            # A node that could not say it is done still goes, once the longest request could
            # have ended.
            "default_result": "CONTINUE",
        },
    ]


def _heartbeat(seconds: int) -> int:
    return max(HEARTBEAT_MIN_S, min(HEARTBEAT_MAX_S, seconds))
