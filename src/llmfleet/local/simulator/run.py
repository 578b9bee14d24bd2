"""One simulation: a trace's requests through the edge to the fleet, the scaler deciding every
`autoscaling.interval_s` with `llmfleet.autoscale.policy.decide`, as on AWS, and the figures
a policy is judged by when the last request is answered.

The fleet starts at `fleet.desired` nodes (a `fixed:N` policy at N), all serving, plus the
on-demand group's minimum. The trace's arrivals stop at its end; the simulation runs on until
every request is served or given up, and the nodes are billed until then.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import simpy

from llmfleet.autoscale.policy import Group, NodeState, PolicySettings, ScalerState, decide
from llmfleet.config import FleetConfig
from llmfleet.local.loadgen.report import percentile
from llmfleet.local.simulator.edge import Edge
from llmfleet.local.simulator.fleet import Fleet
from llmfleet.local.simulator.observe import History
from llmfleet.local.simulator.outcomes import Outcomes
from llmfleet.local.simulator.report import Moment, ScaleEvent, SimulationResult
from llmfleet.local.simulator.settings import SimulationError, SimulationSettings
from llmfleet.local.simulator.students import Students
from llmfleet.local.simulator.workload import Lengths, Request, requests
from llmfleet.local.traces import Trace


@dataclass(frozen=True)
class Progress:
    t_s: float
    duration_s: float
    nodes: int
    requests: int


def simulate(config: FleetConfig, trace: Trace,
             settings: SimulationSettings | None = None,
             progress: Callable[[Progress], None] | None = None) -> SimulationResult:
    """Run `trace` against the fleet `config` describes, under its autoscaling policy."""
    return _Simulation(config, trace, settings or SimulationSettings(), progress).run()


class _Simulation:
    def __init__(self, config: FleetConfig, trace: Trace, settings: SimulationSettings,
                 progress: Callable[[Progress], None] | None) -> None:
        self.config, self.trace, self.settings, self.progress = config, trace, settings, progress
        self.spot_price, self.on_demand_price = _hourly_prices(config)
        self.preset = settings.preset_for(config)
        self.env = simpy.Environment()
        self.outcomes = Outcomes(settings.ttft_slo_s, settings.e2e_slo_s)
        self.fleet = Fleet(self.env, config, self.preset, settings, self._done,
                           self._gave_up, self._hand_back)
        self.edge = Edge(self.fleet.ready, lambda: self.env.now, self._failed)
        self.history = History(config.autoscaling,
                               node_concurrency=float(self.preset.max_num_seqs))
        self.policy = PolicySettings.of(config)
        self.state = self._start_fleet()
        self.scale_log: list[ScaleEvent] = []
        self.timeline: list[Moment] = []
        self.peak_nodes = 0
        self.arrivals_done = False
        self.reclaims = random.Random(f"llmfleet-sim-spot-{settings.seed}")

    def _hand_back(self, handed: list[Request]) -> None:
        self.edge.send_again(handed)

    # What happened to a request, told to the outcomes and then to its student, if any.
    def _done(self, request: Request, now: float) -> None:
        self.outcomes.done(request, now)
        _ended(request)

    def _gave_up(self, request: Request, now: float) -> None:
        self.outcomes.gave_up(request, now)
        _ended(request)

    def _failed(self, request: Request, now: float, reason: str) -> None:
        self.outcomes.fail(request, now, reason)
        _ended(request)

    def _start_fleet(self) -> ScalerState:
        config = self.config
        low, high = config.fleet.min_size, config.fleet.max_size
        fixed = config.autoscaling.fixed_size
        size = max(low, min(high, fixed if fixed is not None else config.fleet.desired))
        od = config.on_demand
        if config.fleet.spot:
            self.fleet.start_with(Group.SPOT, size)
            self.fleet.start_with(Group.ON_DEMAND, od.min_size)
            return ScalerState(size, od.min_size)
        size = max(od.min_size, min(od.max_size, size))
        self.fleet.start_with(Group.ON_DEMAND, size)
        return ScalerState(0, size)

    def run(self) -> SimulationResult:
        env = self.env
        env.process(self._arrivals())
        finished = env.process(self._control())
        env.run(until=finished)
        return self._result(env.now)

    def _arrivals(self):
        env, settings = self.env, self.settings
        if settings.think_s is not None:
            students = Students(env, self.trace, settings.think_s, settings.seed,
                                Lengths(settings.seed, settings.prompts, settings.outputs),
                                self._send)
            yield env.process(students.run())
        else:
            for request in requests(self.trace, settings.seed, settings.prompts,
                                    settings.outputs):
                yield env.timeout(request.arrival - env.now)
                self._send(request)
        self.arrivals_done = True

    def _send(self, request: Request) -> None:
        self.outcomes.arrive()
        self.edge.send(request)

    def _control(self):
        """Scrapes, spot notices and decisions, in time order, until every request is done."""
        env = self.env
        scrape_s = self.config.alerts.scrape_interval_s
        interval_s = self.config.autoscaling.interval_s
        next_scrape, next_decision = 0.0, interval_s
        while True:
            at = min(next_scrape, next_decision)
            yield env.timeout(at - env.now)
            if at == next_scrape:
                self._scrape(scrape_s)
                next_scrape += scrape_s
            if at == next_decision:
                self._decide()
                next_decision += interval_s
            if self.arrivals_done and self.outcomes.in_flight == 0:
                return

    def _scrape(self, scrape_s: float) -> None:
        now = self.env.now
        live = self.fleet.live()
        for node in live:
            node.engine.give_up_waiting()
        self.history.scrape(now, live, self.outcomes.arrived)
        serving = sum(1 for n in live if n.state is not NodeState.DRAINING)
        self.peak_nodes = max(self.peak_nodes, serving)
        rate = self.settings.spot_interruptions_per_hour
        if rate:
            chance = rate * scrape_s / 3600
            for node in live:
                if node.group is Group.SPOT and not node.reclaimed and (
                        self.reclaims.random() < chance):
                    self.fleet.reclaim(node)
        if self.progress is not None:
            self.progress(Progress(now, self.trace.duration_s, serving, self.outcomes.arrived))

    def _decide(self) -> None:
        now = self.env.now
        live = self.fleet.live()
        decision = decide(self.history.observations(now, live), self.policy, self.state)
        assert decision.state is not None
        self.state = decision.state
        by_name = {node.name: node for node in live}
        for name in decision.drain:
            self.fleet.drain(by_name[name])
        fleet = self.fleet
        before = (fleet.desired[Group.SPOT], fleet.desired[Group.ON_DEMAND])
        fleet.set_desired(Group.SPOT, decision.spot)
        fleet.set_desired(Group.ON_DEMAND, decision.on_demand)
        if (decision.spot, decision.on_demand) != before:
            self.scale_log.append(ScaleEvent(now, decision.spot, decision.on_demand,
                                             decision.reason))
        self.timeline.append(Moment(
            now,
            ready=len(fleet.ready),
            booting=sum(1 for n in live if n.state is NodeState.BOOTING),
            draining=sum(1 for n in live if n.state is NodeState.DRAINING),
            waiting=sum(n.engine.queued for n in live),
            running=sum(n.engine.running for n in live)))

    def _result(self, end: float) -> SimulationResult:
        outcomes, fleet = self.outcomes, self.fleet
        spot_hours = fleet.node_hours(Group.SPOT, end)
        od_hours = fleet.node_hours(Group.ON_DEMAND, end)
        latencies = outcomes.latencies
        return SimulationResult(
            trace=self.trace.name,
            policy=self.config.autoscaling.policy,
            seed=self.settings.seed,
            preset=self.preset.name,
            duration_s=self.trace.duration_s,
            simulated_s=end,
            requests=outcomes.arrived,
            served=outcomes.served,
            failed=dict(outcomes.failed),
            retried=outcomes.retried,
            slo_attainment=outcomes.within_slo / outcomes.arrived if outcomes.arrived else 1.0,
            ttft_attainment=(outcomes.first_token_in_time / outcomes.arrived
                             if outcomes.arrived else 1.0),
            p50_latency_s=percentile(latencies, 50) if latencies else None,
            p99_latency_s=percentile(latencies, 99) if latencies else None,
            p99_ttft_s=percentile(outcomes.ttfts, 99) if outcomes.ttfts else None,
            spot_gpu_hours=spot_hours,
            on_demand_gpu_hours=od_hours,
            cost_usd=spot_hours * self.spot_price + od_hours * self.on_demand_price,
            peak_nodes=self.peak_nodes,
            spot_interruptions=fleet.interruptions,
            scale_log=tuple(self.scale_log),
            timeline=tuple(self.timeline),
        )


def _ended(request: Request) -> None:
    if request.ended is not None:
        request.ended()


def _hourly_prices(config: FleetConfig) -> tuple[float, float]:
    """(spot, on-demand) USD per hour of the fleet's first instance type, from `prices`."""
    instance_type = config.fleet.instance_types[0].type
    found = []
    for market, table in (("spot", config.prices.spot), ("on_demand", config.prices.on_demand)):
        if instance_type not in table:
            raise SimulationError(f"prices.{market}: no price for {instance_type}; add "
                                  f"prices.{market}.{instance_type} (USD per hour)")
        found.append(table[instance_type])
    return found[0], found[1]
