"""The sandbox's autoscaler: the scaling policy in a loop against the sandbox's Prometheus,
adding and draining backends (`llmfleet up --autoscale` runs it as a process of the sandbox).

Every `autoscaling.interval_s` it reads the fleet's load from Prometheus (the windows as
PromQL, `llmfleet.autoscale.prometheus_source`; a backend's concurrency is the backends'
max_num_seqs until a queue measures it), asks `decide` for the fleet's size and acts
on it (`llmfleet.local.sandbox.fleet`); in between it moves drains on. Each decision is one
line in its log and the sandbox's autoscaler report, which `status` and `top` show. Decisions
rest on nothing remembered but the policy's `ScalerState`; besides it, only the drains under
way are kept.

    python -m llmfleet.local.autoscaler --state-dir .llmfleet/sandbox --max-backends 4
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from llmfleet.autoscale.policy import Node, NodeState, PolicySettings, ScalerState, decide
from llmfleet.autoscale.prometheus_source import PrometheusSource
from llmfleet.autoscale.sources import MetricsSource, SourceError, observations
from llmfleet.config import FleetConfig, load_config
from llmfleet.errors import LlmfleetError
from llmfleet.local.sandbox.autoscaling import (
    PROCESS,
    AutoscalerReport,
    LastDecision,
    policy_config,
)
from llmfleet.local.sandbox.fleet import SandboxFleet
from llmfleet.local.sandbox.ports import LOOPBACK
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.local.sandbox.run import SandboxError, SandboxState, load_state
from llmfleet.local.simulator.capacity import sandbox_concurrency

log = logging.getLogger("llmfleet.autoscaler")

# How often drains are moved on between two decisions.
DRAIN_STEP_S = 0.25
# `up` records this process right after starting it; it acts only once it is in the records.
RECORDED_WITHIN_S = 30.0


class Autoscaler:
    """One sandbox's scaling loop: a source to read, a fleet to change, a report to keep."""

    def __init__(self, config: FleetConfig, policy: PolicySettings, source: MetricsSource,
                 fleet: SandboxFleet, report_file: Path) -> None:
        self.config, self.policy = config, policy
        self.source, self.fleet, self.report_file = source, fleet, report_file
        live = sum(1 for n in fleet.nodes() if n.state is not NodeState.DRAINING)
        self.scaler = ScalerState(spot=live, on_demand=0)
        self.report = AutoscalerReport(
            policy=config.autoscaling.policy, desired=live,
            minimum=policy.min_size, maximum=policy.max_size, scaler=self.scaler)
        self.report.save(report_file)

    def run(self, stopping: threading.Event) -> None:
        """Decide every interval and move drains on in between, until `stopping` is set."""
        next_decision = time.monotonic()
        while not stopping.is_set():
            if time.monotonic() >= next_decision:
                next_decision = time.monotonic() + self.config.autoscaling.interval_s
                self.decide_once()
            try:
                self.fleet.advance()
            except (LlmfleetError, OSError) as error:
                log.error("could not move the drains on: %s", error)  # the next step tries again
            stopping.wait(DRAIN_STEP_S)

    def decide_once(self) -> None:
        """One decision, acted on and reported. When the source cannot be read the fleet
        stays as it is, and the log and the report say why."""
        now = time.time()
        try:
            metrics = self.source.read(now)
        except SourceError as error:
            log.warning("no decision: %s", error)
            self._report(LastDecision(now, f"no decision: {error}", self.report.desired))
            return
        obs = observations(now, self.fleet.nodes(), metrics)
        decision = decide(obs, self.policy, self.scaler)
        self.scaler = decision.state or self.scaler
        log.info("desired %d (%s): %s", decision.spot, _fleet_text(obs.nodes), decision.reason)
        try:
            self.fleet.resize(decision.spot, decision.drain, obs.nodes)
        except (LlmfleetError, OSError) as error:
            log.error("could not resize the fleet to %d: %s", decision.spot, error)
        self._report(LastDecision(now, decision.reason, decision.spot, decision.drain))

    def _report(self, last: LastDecision) -> None:
        self.report = replace(self.report, desired=last.desired, last_decision=last,
                              scaler=self.scaler)
        self.report.save(self.report_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.local.autoscaler",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="the sandbox's state")
    parser.add_argument("--max-backends", type=int, required=True,
                        help="the most backends it runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Only a flag: a backend being started or stopped is finished and recorded first.
        signal.signal(signum, lambda *_: stopping.set())
    try:
        state = _own_state(args.state_dir.resolve())
        config = load_config(state.config_file).config
        policy = PolicySettings.of(policy_config(config, args.max_backends))
        if state.monitor_ports is None or state.autoscaler_file is None:
            raise SandboxError("the autoscaler reads the queue from Prometheus: the sandbox "
                               "must run with monitoring")
        source = PrometheusSource(f"http://{LOOPBACK}:{state.monitor_ports.prometheus}",
                                  config.autoscaling, config.alerts.evaluation_interval_s,
                                  starting_concurrency=sandbox_concurrency(config))
        fleet = SandboxFleet(config, args.state_dir.resolve(), log.info)
        scaler = Autoscaler(config, policy, source, fleet, Path(state.autoscaler_file))
    except LlmfleetError as error:
        log.error("%s", error)
        return 1
    log.info("%s policy, %d to %d backends, a decision every %g s",
             config.autoscaling.policy, policy.min_size, policy.max_size,
             config.autoscaling.interval_s)
    scaler.run(stopping)
    log.info("stopped")
    return 0


def _own_state(state_dir: Path) -> SandboxState:
    """The sandbox's records once they list this process (`up` saves them just after it
    starts it: acting before would have `up` overwrite what this process records)."""
    found: list[SandboxState] = []

    def recorded() -> bool:
        state = load_state(state_dir)
        record = state.process(PROCESS) if state else None
        if state is not None and record is not None and record.pid == os.getpid():
            found.append(state)
            return True
        return False

    if not wait_until(recorded, RECORDED_WITHIN_S, interval_s=0.1):
        raise SandboxError(f"this process (pid {os.getpid()}) is not in the sandbox's records in "
                           f"{state_dir}; start it with `llmfleet up --autoscale`")
    return found[0]


def _fleet_text(nodes: Sequence[Node]) -> str:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.state.value] = counts.get(node.state.value, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "no backends"


if __name__ == "__main__":
    sys.exit(main())
