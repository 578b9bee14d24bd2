"""The fleet simulator against the sandbox: one short surge played in both, and what the
scaling policy did in each, side by side with the ratio sandbox / simulator.

Both run the same config (below; `--set K=V` changes autoscaling keys): `adaptive` on
windows of seconds, decisions every 2 s, 1 to --max-backends simulated T4 backends of 4
slots, each serving --boot-s after it is asked for. The simulator runs the trace as
`llmfleet simulate` does, with the sandbox's max_num_seqs and boot delay; the sandbox runs
it live with `up --autoscale` (real nginx, Prometheus and simulated vLLM backends on
loopback), the load generator playing the trace open loop with the same token lengths.

The trace: 0.5 requests/s, at 30 s a ramp to 3/s (1.5 for 5 s), held until 75 s, down to
0.5/s from 85 s, to 160 s. Figures, both read at every decision (the simulator's timeline,
the sandbox's autoscaler log): scale-out decisions (the desired size went up), the peak of
ready backends, seconds from the ramp to the first scale-out, scale-in decisions, seconds from
the decline (75 s) to the desired size first back at the minimum, backend-seconds ready
during the trace, latency, and requests failed (the sandbox must have none; it exits 1 if
any did).

    .venv/bin/python bench/autoscaling_crosscheck.py [--seed 0] [--sim-seeds 10] [--boot-s 3]
        [--set K=V,...] [--sim-only]

The simulator draws its own arrivals and lengths (the same rates and distributions, not the
same requests), so it runs --sim-seeds seeds: its column is their mean, with their range.

About 3 minutes: the sandbox plays the 160 s trace in real time, then watches the scale-in
for at most --settle-s more.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from common import ratio, say

from llmfleet.config import FleetConfig, validate
from llmfleet.local.loadgen import LoadReport, LoadSpec, run_load_sync
from llmfleet.local.sandbox import down, load_state, up
from llmfleet.local.sandbox.ports import free_port
from llmfleet.local.sandbox.processes import wait_until
from llmfleet.local.simulator import SimulationResult, SimulationSettings, simulate
from llmfleet.local.simulator.capacity import sandbox_concurrency
from llmfleet.local.traces import Trace

RAMP_S, DECLINE_S = 30.0, 75.0
TRACE = Trace("crosscheck-surge", (
    (0.0, 0.5), (RAMP_S, 1.5), (RAMP_S + 5, 3.0), (DECLINE_S, 1.5), (DECLINE_S + 10, 0.5),
    (160.0, 0.0)))
OUTPUT_TOKENS = "uniform:16-96"  # ~3 s on a T4 with a few in its batch: a short run
PROMPT_TOKENS = "uniform:32-256"


def config_data(max_backends: int, boot_s: float, scaling: dict[str, Any]) -> dict[str, Any]:
    return {
        "fleet": {"min_size": 1, "desired": 1, "max_size": max_backends},
        "on_demand": {"min_size": 0},
        "autoscaling": {
            # Windows of seconds, long enough that a few arrivals' Poisson noise does not
            # make the trend saw (4 s and 10 s do, at 0.5 requests/s).
            "policy": "adaptive", "interval_s": 2, "queue_threshold": 2,
            "scale_out_after_s": 8, "panic_after_s": 2, "scale_in_after_s": 30,
            "cooldown_s": 10,
            # A new backend serves boot_s after it is asked for, plus a sync pass.
            "scale_out_lead_s": boot_s + 2,
            # 0.0625 (the default) plans 0.25 running requests a 4-slot backend: the fleet
            # would sit at its maximum. 0.5 is the cheaper setting docs/autoscaling.md gives.
            "slo_utilisation": 0.5,
            **scaling,
        },
        "edge": {"sync_interval_s": 1},
        # The arrival rate over scale_out_after_s, as the simulator measures it.
        "alerts": {"scrape_interval_s": 1, "evaluation_interval_s": 1, "rate_window_s": 8},
        "sandbox": {"backends": 1, "preset": "t4", "max_num_seqs": 4, "boot_delay_s": boot_s,
                    "auth": False, "monitoring": True, "edge_port": free_port(),
                    "base_port": free_port()},
    }


@dataclass(frozen=True)
class Step:
    """One decision: seconds since the trace started, desired size, ready backends."""

    t_s: float
    desired: int
    ready: int


@dataclass(frozen=True)
class Figures:
    requests: int
    failed: int
    scale_outs: int
    scale_ins: int
    peak_ready: int
    first_scale_out_s: float | None  # after the ramp began
    back_to_min_s: float | None  # after the decline began
    ready_s: float  # backend-seconds ready, over the decisions in the trace
    p50_s: float | None
    p99_s: float | None

    @classmethod
    def of(cls, steps: Sequence[Step], minimum: int, interval_s: float, *, requests: int,
           failed: int, p50_s: float | None, p99_s: float | None) -> Figures:
        outs, previous = [], minimum
        for step in steps:
            if step.desired > previous:
                outs.append(step)
            previous = step.desired
        first = next((s.t_s - RAMP_S for s in outs if s.t_s >= RAMP_S), None)
        # Back at the minimum after the decline, the first time (a later scale-out on the
        # tail's noise does not count); none without a scale-out before: nothing to undo.
        back = next((s.t_s - DECLINE_S for s in steps
                     if s.t_s >= DECLINE_S and s.desired <= minimum
                     and any(o.t_s < s.t_s for o in outs)), None)
        ins = sum(1 for before, step in pairwise(steps)
                  if step.desired < before.desired)
        in_trace = [s for s in steps if 0 <= s.t_s <= TRACE.duration_s]
        return cls(requests=requests, failed=failed, scale_outs=len(outs), scale_ins=ins,
                   peak_ready=max((s.ready for s in steps), default=0),
                   first_scale_out_s=first, back_to_min_s=back,
                   ready_s=sum(s.ready for s in in_trace) * interval_s, p50_s=p50_s,
                   p99_s=p99_s)


def simulated(config: FleetConfig, seed: int, boot_s: float) -> tuple[Figures, SimulationResult]:
    seqs = sandbox_concurrency(config)
    settings = SimulationSettings(
        seed=seed, preset=config.sandbox.preset, max_num_seqs=int(seqs) if seqs else None,
        boot_s=boot_s, load_s=0.0, spot_interruptions_per_hour=0.0,
        output_tokens=OUTPUT_TOKENS, prompt_tokens=PROMPT_TOKENS)
    result = simulate(config, TRACE, settings)
    steps, desired, events = [], config.fleet.desired, list(result.scale_log)
    for moment in result.timeline:
        while events and events[0].t_s <= moment.t_s:
            desired = events.pop(0).spot
        steps.append(Step(moment.t_s, desired, moment.ready))
    figures = Figures.of(steps, config.fleet.min_size, config.autoscaling.interval_s,
                         requests=result.requests, failed=sum(result.failed.values()),
                         p50_s=result.p50_latency_s, p99_s=result.p99_latency_s)
    return figures, result


# The autoscaler's log line for each decision (llmfleet.local.autoscaler).
_DECISION = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO desired (\d+) "
                       r"\(([^)]*)\): (.*)$")


def decisions(log: str, started_at: float) -> tuple[list[Step], list[tuple[float, str]]]:
    steps, reasons = [], []
    for line in log.splitlines():
        found = _DECISION.match(line)
        if not found:
            continue
        at = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() - started_at
        ready = re.search(r"(\d+) ready", found[3])
        steps.append(Step(at, int(found[2]), int(ready[1]) if ready else 0))
        reasons.append((at, found[4]))
    return steps, reasons


def live(config: FleetConfig, seed: int, settle_s: float
         ) -> tuple[Figures, LoadReport, list[tuple[float, str]]]:
    with tempfile.TemporaryDirectory(prefix="llmfleet-crosscheck-") as folder:
        state_dir = Path(folder) / "sandbox"
        try:
            say("starting the sandbox with the autoscaler")
            report = up(config, state_dir, edge_port_explicit=True, autoscale=True)
            log = Path(load_state(state_dir).process("autoscaler").log)
            # Its first decision: the loop runs, and reads Prometheus.
            if not wait_until(lambda: "INFO desired" in log.read_text(), 30, interval_s=0.2):
                raise SystemExit("the autoscaler made no decision within 30 s")
            say(f"playing {TRACE.name} ({TRACE.duration_s:g} s) through {report.endpoint}")
            load = run_load_sync(LoadSpec(
                url=report.endpoint, model=config.model.public_name, requests=None,
                profile=TRACE, seed=seed, output_tokens=OUTPUT_TOKENS,
                prompt_tokens=PROMPT_TOKENS, timeout_s=60,
                max_duration_s=TRACE.duration_s + 60))
            assert load.started_at is not None
            minimum = config.fleet.min_size

            def settled() -> bool:
                steps, _ = decisions(log.read_text(), load.started_at or 0.0)
                return bool(steps) and steps[-1].desired <= minimum and steps[-1].ready <= max(
                    1, minimum)

            say(f"load done; watching the scale-in for at most {settle_s:g} s")
            wait_until(settled, settle_s, interval_s=0.5)
            steps, reasons = decisions(log.read_text(), load.started_at)
        finally:
            down(state_dir)
    failed = load.planned_requests - load.ok + load.broken_streams
    figures = Figures.of(steps, config.fleet.min_size, config.autoscaling.interval_s,
                         requests=load.planned_requests, failed=failed,
                         p50_s=load.latency_p50_s, p99_s=load.latency_p99_s)
    return figures, load, reasons


def render(sims: Sequence[Figures], box: Figures) -> str:
    """The simulator's mean over its seeds and their range, the sandbox's run, the ratio of
    the sandbox's figure to the simulator's mean."""
    def number(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        ("requests", "requests", "d"),
        ("requests failed", "failed", "d"),
        ("scale-out decisions", "scale_outs", "d"),
        ("scale-in decisions", "scale_ins", "d"),
        ("peak ready backends", "peak_ready", "d"),
        ("ramp -> 1st scale-out s", "first_scale_out_s", ".1f"),
        ("decline -> minimum s", "back_to_min_s", ".1f"),
        ("backend-seconds ready", "ready_s", ".0f"),
        ("latency P50 s", "p50_s", ".2f"),
        ("latency P99 s", "p99_s", ".2f"),
    ]
    lines = [f"  {'':<24} {'simulator':>9} {'sim range':>13} {'sandbox':>9} {'ratio':>6}"]
    for name, field_name, spec in rows:
        values = [getattr(f, field_name) for f in sims if getattr(f, field_name) is not None]
        mean = sum(values) / len(values) if values else None
        low_high = (f"{number(min(values), spec)}-{number(max(values), spec)}"
                    if values else "-")
        shown = spec if mean is None or spec != "d" else ".1f"
        value = getattr(box, field_name)
        lines.append(f"  {name:<24} {number(mean, shown):>9} {low_high:>13} "
                     f"{number(value, spec):>9} {ratio(value, mean)}")
    return "\n".join(lines)


def _scaling(text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in text.split(","):
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise argparse.ArgumentTypeError(f"expected key=value pairs, got {pair!r}")
        for kind in (int, float, str):
            try:
                found[key.strip()] = kind(value.strip())
                break
            except ValueError:
                continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="arrivals and lengths (both)")
    parser.add_argument("--boot-s", type=float, default=3.0,
                        help="a new backend's cold start (sandbox.boot_delay_s)")
    parser.add_argument("--max-backends", type=int, default=6)
    parser.add_argument("--settle-s", type=float, default=45.0,
                        help="after the trace, how long the sandbox may take to scale in")
    parser.add_argument("--set", action="append", default=[], type=_scaling,
                        help="autoscaling keys for both as K=V,K=V (repeatable)")
    parser.add_argument("--sim-seeds", type=int, default=10,
                        help="simulator runs, from --seed on (its arrivals are its own draw)")
    parser.add_argument("--sim-only", action="store_true", help="skip the sandbox")
    args = parser.parse_args()
    scaling: dict[str, Any] = {}
    for pairs in args.set:
        scaling.update(pairs)
    config = validate(config_data(args.max_backends, args.boot_s, scaling), "crosscheck")

    say(f"simulating, {args.sim_seeds} seed(s)")
    sims = []
    for seed in range(args.seed, args.seed + args.sim_seeds):
        figures, result = simulated(config, seed, args.boot_s)
        sims.append(figures)
        if seed == args.seed:
            print(f"{TRACE.name}: simulator, seed {seed} ({result.requests} requests, "
                  f"{len(result.scale_log)} scale events)")
            for event in result.scale_log:
                print(f"  sim {event.t_s:6.1f} s  desired {event.spot}: {event.reason}")
    if args.sim_only:
        print(render(sims, sims[0]))
        return
    box, load, reasons = live(config, args.seed, args.settle_s)
    print(f"{TRACE.name}: sandbox ({load.planned_requests} requests, errors "
          f"{load.errors_by_status or 'none'}, {load.retried} retried, {load.dropped} dropped)")
    previous = None
    for at, reason in reasons:
        if reason != previous:
            print(f"  box {at:6.1f} s  {reason}")
        previous = reason
    print()
    print(f"same trace, same policy settings (interval {config.autoscaling.interval_s:g} s, "
          f"boot {args.boot_s:g} s, {config.sandbox.max_num_seqs} slots a backend, at most "
          f"{args.max_backends}); simulator = mean over {args.sim_seeds} seed(s) from "
          f"{args.seed}, sandbox = one run with seed {args.seed}; ratio = sandbox / simulator")
    print(render(sims, box))
    if box.failed:
        raise SystemExit(f"the sandbox failed {box.failed} requests: "
                         f"{load.errors_by_status}, {load.broken_streams} broken streams")


if __name__ == "__main__":
    main()
