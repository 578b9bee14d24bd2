"""Every scaling policy on every built-in trace, in the fleet simulator: one table of SLO
attainment, P99 latency, GPU hours, cost and scale events, each with its ratio to `seed`.

The fleet: g4dn.xlarge spot nodes (the simulated T4), 1 to --max-nodes, on-demand fallback
0 to 2 with a warm pool of 1, prices from the config's defaults. `fixed:max` is fixed at
--max-nodes. Each figure is the mean over --seeds seeds; `spread` is the SLO attainment's
highest minus lowest over them; `TTFT ok` the share whose first token came within 2 s (the
misses a queue makes; the rest are answers too long to end in 30 s in their batch). Ends
with the two goals: on `surge`, adaptive beats seed on SLO attainment at no more cost; on
`diurnal`, adaptive costs less than fixed:max at equal SLO attainment (within
--slo-tolerance, and within fixed:max's own spread over the seeds).

--think-s T reads each trace as students instead of requests (a closed loop: each student
sends a message, waits for its answer, thinks T s on average, sends the next), where the
arrival rate follows the fleet's speed: see llmfleet.local.simulator.students.

--variant adds a row per trace: `adaptive` with other autoscaling keys, or another policy,
as comma-separated key=value pairs of the autoscaling section, e.g. `slo_utilisation=0.1`,
`slo_utilisation=0.8,scale_out_lead_s=0` (adaptive without the trend and headroom) or
`policy=fixed:10`.

    .venv/bin/python bench/autoscaling.py [--max-nodes 20] [--seeds 3] [--variant K=V,...]
        [--think-s 50]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

from common import ratio, say

from llmfleet.config import validate
from llmfleet.local.simulator import SimulationResult, SimulationSettings, simulate
from llmfleet.local.traces import BUILTIN_TRACES, load_trace

POLICIES = ("seed", "adaptive", "fixed:1", "fixed:max")


@dataclass(frozen=True)
class Row:
    slo: float
    slo_spread: float  # highest minus lowest over the seeds
    ttft: float  # first token within its SLO: the misses a queue makes
    p99_s: float
    gpu_hours: float
    cost_usd: float
    scale_events: float
    wall_s: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-nodes", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell, averaged")
    parser.add_argument("--slo-tolerance", type=float, default=0.005,
                        help="SLO attainments this close count as equal (default 0.5 points)")
    parser.add_argument("--traces", nargs="*", default=list(BUILTIN_TRACES))
    parser.add_argument("--variant", action="append", default=[], type=_variant,
                        help="another row: autoscaling keys as K=V,K=V (repeatable)")
    parser.add_argument("--think-s", type=float, default=None,
                        help="read the traces as students thinking this long on average "
                             "between an answer and their next message (closed loop)")
    args = parser.parse_args()
    settings = SimulationSettings(think_s=args.think_s)

    rows = [(policy, {"policy": policy}) for policy in POLICIES] + args.variant
    table: dict[tuple[str, str], Row] = {}
    for trace_name in args.traces:
        trace = load_trace(trace_name)
        for label, scaling in rows:
            say(f"{trace_name} with {label}, {args.seeds} seed(s)")
            table[trace_name, label] = _cell(trace, scaling, args.max_nodes, args.seeds,
                                             settings)
    print(_render(table, args.traces, [label for label, _ in rows], args.max_nodes,
                  args.seeds, args.think_s))
    print()
    print(_goals(table, args.slo_tolerance))


def _variant(text: str) -> tuple[str, dict[str, object]]:
    scaling: dict[str, object] = {"policy": "adaptive"}
    for pair in text.split(","):
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise argparse.ArgumentTypeError(f"expected key=value pairs, got {pair!r}")
        scaling[key.strip()] = _value(value.strip())
    return text, scaling


def _value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _cell(trace, scaling: dict[str, object], max_nodes: int, seeds: int,
          settings: SimulationSettings) -> Row:
    if scaling.get("policy") == "fixed:max":
        scaling = {**scaling, "policy": f"fixed:{max_nodes}"}
    config = validate({
        "fleet": {"min_size": 1, "desired": 1, "max_size": max_nodes},
        "autoscaling": scaling,
    }, "bench")
    results: list[SimulationResult] = []
    started = time.perf_counter()
    for seed in range(seeds):
        results.append(simulate(config, trace, replace(settings, seed=seed)))
    wall = (time.perf_counter() - started) / seeds

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    slos = [r.slo_attainment for r in results]
    return Row(
        slo=mean(slos),
        slo_spread=max(slos) - min(slos),
        ttft=mean([r.ttft_attainment for r in results]),
        p99_s=mean([r.p99_latency_s or 0.0 for r in results]),
        gpu_hours=mean([r.gpu_hours for r in results]),
        cost_usd=mean([r.cost_usd for r in results]),
        scale_events=mean([float(r.scale_events) for r in results]),
        wall_s=wall,
    )


def _render(table: dict[tuple[str, str], Row], traces: list[str], labels: list[str],
            max_nodes: int, seeds: int, think_s: float | None) -> str:
    width = max(10, *(len(label) for label in labels))
    arrivals = ("the traces' requests as they are" if think_s is None else
                f"the traces as students thinking {think_s:g} s between an answer and their "
                "next message")
    lines = [
        f"autoscaling policies in the fleet simulator: t4 spot nodes 1..{max_nodes}, "
        f"{seeds} seed(s), {arrivals}; x seed = ratio to the seed's rule on the same trace; "
        "spread = SLO's highest - lowest over the seeds",
        f"  {'trace':<8} {'policy':<{width}} {'SLO':>7} {'spread':>6} {'x seed':>6} "
        f"{'TTFT ok':>7} "
        f"{'P99 s':>7} {'x seed':>6} "
        f"{'GPU h':>7} {'x seed':>6} {'USD':>7} {'x seed':>6} {'events':>6} {'sim s':>6}",
    ]
    for trace in traces:
        base = table[trace, "seed"]
        for policy in labels:
            row = table[trace, policy]
            lines.append(
                f"  {trace:<8} {policy:<{width}} {row.slo:7.2%} {row.slo_spread * 100:6.2f} "
                f"{ratio(row.slo, base.slo)} {row.ttft:7.2%} "
                f"{row.p99_s:7.1f} {ratio(row.p99_s, base.p99_s)} "
                f"{row.gpu_hours:7.2f} {ratio(row.gpu_hours, base.gpu_hours)} "
                f"{row.cost_usd:7.2f} {ratio(row.cost_usd, base.cost_usd)} "
                f"{row.scale_events:6.0f} {row.wall_s:6.1f}")
    return "\n".join(lines)


def _goals(table: dict[tuple[str, str], Row], tolerance: float) -> str:
    lines = []
    if ("surge", "seed") in table:
        seed, ours = table["surge", "seed"], table["surge", "adaptive"]
        met = ours.slo > seed.slo and ours.cost_usd <= seed.cost_usd
        lines.append(
            f"surge: adaptive {ours.slo:.2%} within SLO for USD {ours.cost_usd:.2f}, seed "
            f"{seed.slo:.2%} for USD {seed.cost_usd:.2f}: "
            f"{'met' if met else 'NOT met'} (better SLO at no more cost)")
    if ("diurnal", "seed") in table:
        fixed, ours = table["diurnal", "fixed:max"], table["diurnal", "adaptive"]
        for name, within in ((f"{tolerance * 100:g} points", tolerance),
                             (f"fixed:max's spread over the seeds, {fixed.slo_spread * 100:.2f} "
                              "points", fixed.slo_spread)):
            met = ours.cost_usd < fixed.cost_usd and ours.slo >= fixed.slo - within
            lines.append(
                f"diurnal: adaptive {ours.slo:.2%} within SLO for USD {ours.cost_usd:.2f}, "
                f"fixed:max {fixed.slo:.2%} for USD {fixed.cost_usd:.2f}: "
                f"{'met' if met else 'NOT met'} (less cost at an SLO within {name})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
