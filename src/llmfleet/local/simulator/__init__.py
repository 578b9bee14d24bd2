"""A discrete-event model of the GPU fleet (simpy) that runs the scaling policy the sandbox
and AWS run, `llmfleet.autoscale.policy.decide`, against a trace of arrivals, so that policies
can be compared on SLO attainment, latency and cost in seconds instead of days.

    from llmfleet.local.simulator import simulate
    result = simulate(config, load_trace("surge"))

Modules, one idea each: `workload` (the requests), `engine` (one node's continuous batching),
`fleet` (the auto scaling groups and node lifecycles), `edge` (least_conn), `observe` (the
policy's observations from the simulator's own history), `outcomes` (SLO tally), `run` (the
simulation), `report` (its result), `settings`, `cli` (`llmfleet simulate`).
"""

from llmfleet.local.simulator.report import Moment, ScaleEvent, SimulationResult
from llmfleet.local.simulator.run import Progress, simulate
from llmfleet.local.simulator.settings import SimulationError, SimulationSettings

__all__ = [
    "Moment",
    "Progress",
    "ScaleEvent",
    "SimulationError",
    "SimulationResult",
    "SimulationSettings",
    "simulate",
]
